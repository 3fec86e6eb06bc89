"""Seconds of compute per second of talking-head video, at 256 and 512, with and without the GFPGAN enhancer.

What is measured, in one process, with the app's own job path (`studio.submit("sadtalker", ...)` on the one queue,
as the tab, REST route and CLI do: decode, preprocess, 3DMM, coefficients, render, aspect restore, enhancer, H.264
+ AAC encode, sidecar):

* Weights: every network at its REAL size with the golden-set formula (random, finite), written under the official
  file names into a temporary `models/SadTalker` and read by the real loader. The images are noise; compute is that
  of the released networks. The 512 file holds the same tensors (the releases share shapes).
* The face detector is a stub with fixed landmarks (detection runs once per video; its cost is not per second).
* Enhancer rows: the studio's face restoration with a random-weight GFPGAN v1.4 (real architecture, via spandrel)
  and a detector stub that finds one face per frame, so every frame pays GFPGAN's detect-align-restore-paste.
* Baseline, measured in the same run on the same loaded networks: the renderer alone (MappingNet, keypoints,
  generator) over the same frames. "job / renderer" is the whole job's cost over the bare networks'.
* Each size runs a one-frame job first (loads the networks, warms the kernels); timed jobs follow.

CPU runs are REDUCED, and say so: a handful of frames (a real-size 256 frame costs ~10 s on two cores). On a GPU the
default is a 10 s recording at batch size 8.

    venv/bin/python bench/sadtalker.py                        # CUDA if available, else the reduced CPU run
    venv/bin/python bench/sadtalker.py --seconds 0.12 --sizes 256 --no-enhancer
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine_description  # noqa: E402
from modules.engine.postprocess.faces import FaceBox, FaceRestorers  # noqa: E402
from modules.services import Services, build_services  # noqa: E402
from tests.fixtures.talking_head_inputs import StubLandmarker, portrait, voice, wav_bytes  # noqa: E402

FPS = 25


class OneFace:
    """Face restoration's detector stand-in: one face in the middle of every frame."""

    def detect(self, image_rgb: np.ndarray) -> list[FaceBox]:
        h, w = image_rgb.shape[:2]
        eyes_y, mouth_y = 0.42 * h, 0.66 * h
        points = np.array([[0.38 * w, eyes_y], [0.62 * w, eyes_y], [0.5 * w, 0.53 * h], [0.41 * w, mouth_y],
                           [0.59 * w, mouth_y]])
        return [FaceBox(points, (0.25 * w, 0.25 * h, 0.75 * w, 0.8 * h), 0.99)]


def write_models(data: Path, talking_head: Any) -> None:
    from safetensors.torch import save_file

    weights = talking_head.weights
    folder = data / "models" / "SadTalker"
    folder.mkdir(parents=True, exist_ok=True)
    combined = {f"{net}.{key}": t.contiguous() for net in weights.SAFETENSORS_NETWORKS
                for key, t in weights.synthetic_state_dict(net, 0).items()}
    save_file(combined, str(folder / "SadTalker_V0.0.2_256.safetensors"))
    (folder / "SadTalker_V0.0.2_512.safetensors").symlink_to(folder / "SadTalker_V0.0.2_256.safetensors")
    for net, name in (("mapping_crop", "mapping_00229-model.pth.tar"), ("mapping_full", "mapping_00109-model.pth.tar")):
        torch.save({"mapping": weights.synthetic_state_dict(net, 0), "epoch": 0}, folder / name)
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(4)
    gfpgan = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                    num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    (data / "models" / "GFPGAN").mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": gfpgan.state_dict()}, data / "models" / "GFPGAN" / "GFPGANv1.4.pth")


def run_job(services: Services, request: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    job = services.jobs.submit("sadtalker", request)
    job.wait()
    if job.state.value != "done":
        raise SystemExit(f"the job failed: {job.error}")
    return job.finished_at - job.started_at, job.result


def renderer_seconds(talking_head: Any, folder: Path, device: torch.device, size: int, frames: int,
                     batch: int) -> float:
    """The bare networks over `frames` frames (zero coefficients): MappingNet, keypoints and generator only."""
    nets = talking_head.checkpoints.load_nets(folder, size, "crop", device=str(device))
    render_chain = talking_head.render_chain
    source = render_chain.source_image_tensor(np.asarray(portrait(size, size)), size)
    setup = render_chain.prepare(nets.renderer(), source, np.zeros((1, 73), dtype=np.float32),
                                 np.zeros((frames, 70), dtype=np.float32))
    sync()
    started = time.perf_counter()
    for _ in render_chain.iter_frames(nets.renderer(), setup, batch):
        pass
    sync()
    return time.perf_counter() - started


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="recording length (CPU 0.12, GPU 10)")
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--batch-size", type=int, default=None, help="CPU 1, GPU 8")
    parser.add_argument("--no-enhancer", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    on_gpu = torch.cuda.is_available()
    seconds = args.seconds or (10.0 if on_gpu else 0.12)
    batch = args.batch_size or (8 if on_gpu else 1)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"bench/sadtalker.py: {machine_description(torch.device('cuda' if on_gpu else 'cpu'))}")
    print(f"{'FULL' if on_gpu else 'REDUCED (CPU)'} settings: {seconds:g} s recording, batch size {batch}, "
          f"real-size networks with random weights")

    with tempfile.TemporaryDirectory(prefix="bench-sadtalker-") as tmp:
        data = Path(tmp) / "data"
        services = build_services(["--data-dir", str(data), "--nowebui"], {})
        talking_head = sys.modules["sdstudio_ext_sadtalker.talking_head"]
        for name in ("weights", "render_chain", "checkpoints"):
            __import__(f"sdstudio_ext_sadtalker.talking_head.{name}")
        write_models(data, talking_head)
        engine = services.engine
        engine.face_restorers = FaceRestorers(services.models, engine.memory, services.settings.get, detector=OneFace())
        services.models.refresh()
        runner = next(t.run for t in services.jobs.types() if t.name == "sadtalker").__self__
        runner.use_landmarker(lambda _folder, _device: StubLandmarker())
        services.jobs.start()
        image = base64.b64encode(_png(portrait(512, 512))).decode()

        def request(size: int, length: float, enhancer: str | None) -> dict[str, Any]:
            audio = base64.b64encode(wav_bytes(voice(length))).decode()
            return {"image": image, "audio": audio, "size": size, "batch_size": batch, "seed": 1,
                    "enhancer": enhancer}

        rows = []
        for size in sizes:
            load_s, _ = run_job(services, request(size, 0.04, None))  # loads and warms up
            job_s, result = run_job(services, request(size, seconds, None))
            video_s = result["frames"] / FPS
            runner.release()  # the bare run below holds its own copy of the networks
            bare_s = renderer_seconds(talking_head, data / "models" / "SadTalker", engine.memory.device, size,
                                      result["frames"], batch)
            enhanced_s = None
            if not args.no_enhancer:
                run_job(services, request(size, 0.04, "GFPGAN"))  # loads GFPGAN
                enhanced_s, _ = run_job(services, request(size, seconds, "GFPGAN"))
            rows.append((size, result["frames"], video_s, load_s, bare_s, job_s, enhanced_s))
        services.jobs.stop()

    print(f"\n{'size':>4} {'frames':>6} {'video s':>7} {'1st job s':>9} {'renderer s/s':>12} {'job s/s':>8} "
          f"{'job/renderer':>12} {'+GFPGAN s/s':>11}")
    for size, frames, video_s, load_s, bare_s, job_s, enhanced_s in rows:
        enhanced = f"{enhanced_s / video_s:11.2f}" if enhanced_s is not None else f"{'-':>11}"
        print(f"{size:>4} {frames:>6} {video_s:7.2f} {load_s:9.1f} {bare_s / video_s:12.2f} {job_s / video_s:8.2f} "
              f"{job_s / bare_s:12.2f} {enhanced}")
    print("\ns/s: seconds of compute per second of video (lower is better); upstream with its enhancer on a 24 GB GPU: "
          "43-60 s/s (study.md §6)")


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


if __name__ == "__main__":
    main()
