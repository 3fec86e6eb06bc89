"""The two end-to-end stages: golden case j (waveform + source coefficients -> coefficient rows) and golden
case k (source image + coefficient rows -> rendered frames), plus the pieces around them that upstream
randomises or only exposes through options (blinks, reference videos, explicit head angles)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

from ._pkg import submodule

audio = submodule("audio")
coeffs = submodule("coeffs")
camera_angles = submodule("camera_angles")
render_chain = submodule("render_chain")
render_windows = submodule("render_windows")
audio2pose = submodule("nets.audio2pose")



# ----------------------------------------------------------------------------------------------------------
# j: coefficient stage
# ----------------------------------------------------------------------------------------------------------


def test_j_coeff_pipeline(load_case: Any, synthetic_net: Any) -> None:
    case = load_case("j_coeff_pipeline")
    t, settings = case.tensors, case.sidecar["settings"]
    features = audio.audio_features(t["wav_int16"].numpy().astype(np.float32) / 32768)
    assert features.num_frames == settings["num_frames"]
    assert t["z"].shape[0] == audio2pose.num_noise_draws(features.num_frames)
    out = coeffs.generate_coefficients(
        synthetic_net("audio2exp", case.weight_seed),
        synthetic_net("audio2pose", case.weight_seed),
        features.indiv_mels,
        t["first_coeff"].numpy(),
        int(t["pose_style"].item()),
        blink=t["ratio"].numpy(),
        z=t["z"],
    )
    assert out.dtype == np.float32
    print(case.check({"coeff_3dmm": torch.from_numpy(out)}))


def test_j_blinks_are_upstreams_draws(load_case: Any) -> None:
    """The stored ratio was drawn by upstream after random.seed(input_seed): the same Random state draws it."""
    case = load_case("j_coeff_pipeline")
    ratio = coeffs.random_blink_ratio(case.tensors["ratio"].shape[0], random.Random(case.sidecar["input_seed"]))
    assert np.array_equal(ratio, case.tensors["ratio"].numpy())


def test_blink_edges(constants: dict[str, Any]) -> None:
    blink = constants["blink_random"]
    assert list(coeffs.BLINK_PATTERN) == blink["pattern"] and coeffs.MIN_BLINK_FRAMES == blink["min_frames"]
    assert not coeffs.random_blink_ratio(20, random.Random(0)).any()
    assert not coeffs.random_blink_ratio(21, random.Random(0)).any()  # upstream: IndexError on an empty range
    for frames in (22, 75, 400):
        ratio = coeffs.random_blink_ratio(frames, random.Random(frames))
        assert ratio.shape == (frames,) and ratio.dtype == np.float32 and ratio[-1] == 0
        assert np.count_nonzero(ratio == 1.0) == np.count_nonzero(ratio) // 5  # whole blinks only


def test_reference_video_inputs() -> None:
    mels = np.zeros((7, 80, 16), np.float32)
    first = np.arange(73, dtype=np.float32)[None]
    video = np.stack([np.full(70, i, np.float32) for i in range(3)])
    inputs = coeffs.build_inputs(mels, first, blink=np.ones(7), ref_eyeblink=video)
    assert inputs.indiv_mels.shape == (1, 7, 1, 80, 16) and inputs.ref.shape == (1, 7, 70)
    assert not inputs.ratio.any()  # the video's own eyes replace the blinks
    assert inputs.ref[0, :, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]  # expressions looped
    assert torch.equal(inputs.ref[0, :, 64:], torch.from_numpy(first[:, 64:70]).expand(7, 6))
    assert not coeffs.build_inputs(mels, first, blink=np.ones(7), use_blink=False).ratio.any()
    with pytest.raises(ValueError, match="6 values for 7 frames"):
        coeffs.build_inputs(mels, first, blink=np.ones(6))

    rows = np.zeros((5, 70), np.float32)
    moved = coeffs.apply_reference_pose(rows, np.arange(3 * 70, dtype=np.float32).reshape(3, 70))
    assert moved[:, 64].tolist() == [0, 70, 140, 0, 70]  # relative to the video's first pose, looped
    with pytest.raises(ValueError, match="pose style must be 0..45"):
        coeffs.check_pose_style(46)


def test_coefficients_are_reproducible_with_a_seeded_generator(load_case: Any, synthetic_net: Any) -> None:
    case = load_case("j_coeff_pipeline")
    features = audio.audio_features(case.tensors["wav_int16"].numpy()[:12 * 640].astype(np.float32) / 32768)
    nets = (synthetic_net("audio2exp", case.weight_seed), synthetic_net("audio2pose", case.weight_seed))
    first = case.tensors["first_coeff"].numpy()

    def run(seed: int) -> np.ndarray:
        return coeffs.generate_coefficients(
            *nets, features.indiv_mels, first, 3, rng=random.Random(seed),
            generator=torch.Generator().manual_seed(seed),
        )

    a, b = run(1), run(1)
    assert a.shape == (12, 70) and np.array_equal(a, b)
    assert not np.array_equal(a[:, 64:], run(2)[:, 64:])  # another latent, another head motion


def test_explicit_head_angles() -> None:
    assert camera_angles.angle_sequence([15], 4).tolist() == [15, 15, 15, 15]
    # upstream's arange never reaches the last key angle; the last value is held instead
    assert camera_angles.angle_sequence([0, 10], 11).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]
    ramp = camera_angles.angle_sequence([-20, 30, 10], 36)
    assert ramp.dtype == np.float32 and ramp.shape == (36,) and ramp[0] == -20
    assert int(np.argmax(ramp)) == 25 and np.all(np.diff(ramp[:26]) > 0) and np.all(np.diff(ramp[26:]) <= 0)
    assert camera_angles.angle_sequence([5, 5, 20], 16).tolist() == list(range(5, 20)) + [19]  # no 0-division
    assert camera_angles.angle_sequence([7, 7], 3).tolist() == [7, 7, 7]
    assert camera_angles.angle_sequence([0, 30], 1).tolist() == [0]


# ----------------------------------------------------------------------------------------------------------
# k: render chain
# ----------------------------------------------------------------------------------------------------------


def _k_renderer(case: Any, synthetic_net: Any) -> Any:
    return render_chain.RendererNets(
        kp_extractor=synthetic_net("kp_extractor", case.weight_seed),
        generator=synthetic_net("generator", case.weight_seed),
        mapping=synthetic_net("mapping_crop", case.weight_seed),
    )


def test_k_render_chain(load_case: Any, synthetic_net: Any) -> None:
    """Everything up to the generator for every frame, then the generator for the last frame only (the chunk
    upstream pads): the renderer costs 10-40 s per frame on a shared 2-core CPU. All frames: the slow test below."""
    case = load_case("k_render_chain")
    t = case.tensors
    preprocess, batch_size = "crop", t["target_semantics"].shape[0]  # the sidecar's setting: crop, batch 2
    nets = _k_renderer(case, synthetic_net)
    png, first, rows = t["source_png"].numpy(), t["first_coeff"].numpy(), t["coeff_seq"].numpy()
    source = render_chain.source_image_tensor(png, png.shape[0])
    setup = render_chain.prepare(nets, source, first, rows, preprocess=preprocess)
    frames = setup.num_frames

    # Upstream's batch layout of the same per-frame values: rows are contiguous time chunks, last one padded.
    driving = render_chain.driving_keypoints(nets, setup, 0, frames)
    padded = torch.cat([driving, driving[-1:].repeat((-frames) % batch_size, 1, 1)])
    got = {
        "source_image": source,
        "source_semantics": render_windows.source_semantics(t["first_coeff"], preprocess, batch_size),
        "target_semantics": render_windows.target_semantics(t["coeff_seq"], t["first_coeff"], preprocess, batch_size),
        "kp_canonical": setup.kp_canonical,
        "kp_source": setup.kp_source,
        "kp_driving": padded.reshape(batch_size, -1, *driving.shape[1:]),
    }
    print(case.check(got, names=list(got)))

    chunks = list(render_chain.iter_frames(nets, setup, batch_size, start=frames - 1))
    assert [first for first, _ in chunks] == [frames - 1]
    last = chunks[0][1]
    error = float((last.double() - t["frames"][frames - 1 :].double()).abs().max())
    atol = case.sidecar["recommended_tolerance"]["frames"]["atol"]
    print({"frames[-1]": error})
    assert error <= atol, f"frame {frames - 1}: max abs error {error:.3g} > atol {atol:.3g}"
    as_bytes = render_chain.frames_to_uint8(last)
    assert as_bytes.shape == (1, png.shape[0], png.shape[1], 3) and as_bytes.dtype == np.uint8


@pytest.mark.slow
def test_k_render_chain_every_frame(load_case: Any, synthetic_net: Any) -> None:
    """All frames of case k in batches, put back in time order (RUN_SLOW=1)."""
    case = load_case("k_render_chain")
    t = case.tensors
    batch_size = t["target_semantics"].shape[0]
    nets = _k_renderer(case, synthetic_net)
    source = render_chain.source_image_tensor(t["source_png"].numpy(), t["source_png"].shape[0])
    setup = render_chain.prepare(nets, source, t["first_coeff"].numpy(), t["coeff_seq"].numpy(), preprocess="crop")
    chunks = list(render_chain.iter_frames(nets, setup, batch_size))
    assert [first for first, _ in chunks] == list(range(0, setup.num_frames, batch_size))
    print(case.check({"frames": torch.cat([chunk for _, chunk in chunks])}, names=["frames"]))


def test_render_setup_checks(load_case: Any, synthetic_net: Any) -> None:
    case = load_case("k_render_chain")
    t = case.tensors
    nets = _k_renderer(case, synthetic_net)
    source = render_chain.source_image_tensor(t["source_png"].numpy(), 256)
    first, rows = t["first_coeff"].numpy(), t["coeff_seq"].numpy()
    with pytest.raises(ValueError, match="'full' needs the 73-input MappingNet"):
        render_chain.prepare(nets, source, first, rows, preprocess="full")
    with pytest.raises(ValueError, match="yaw has 2 values for 3 frames"):
        render_chain.prepare(nets, source, first, rows, yaw=np.zeros(2))
    with pytest.raises(ValueError, match="outside the clip"):
        next(render_chain.iter_frames(nets, render_chain.prepare(nets, source, first, rows), 2, start=4))

    # Explicit angles replace the predicted ones for the driving keypoints only.
    yaw = camera_angles.angle_sequence([-20, 20], 3)
    posed = render_chain.prepare(nets, source, first, rows, yaw=yaw)
    plain = render_chain.prepare(nets, source, first, rows)
    assert torch.equal(posed.kp_source, plain.kp_source)
    assert not torch.allclose(
        render_chain.driving_keypoints(nets, posed, 0, 3), render_chain.driving_keypoints(nets, plain, 0, 3)
    )

    small = render_chain.source_image_tensor(np.full((300, 200, 3), 255, np.uint8), 64)
    assert small.shape == (1, 3, 64, 64) and float(small.min()) > 1 - 1e-6 and float(small.max()) <= 1
    ramp = torch.linspace(0, 1, 256).reshape(1, 1, 1, 256).expand(2, 3, 4, 256)
    assert render_chain.frames_to_uint8(ramp)[0, 0, :, 0].tolist() == np.rint(np.linspace(0, 255, 256)).tolist()
