"""`python launch.py sadtalker --image face.png --audio voice.wav --out video.mp4`: a video from the shell.

It goes through the same job queue, device manager and output folder as the tab, with a tqdm bar over the
job's progress. Flag names follow upstream's inference.py (--pose_style is also accepted as --pose-style).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from .media import file_to_base64
from .request import MAX_BATCH_SIZE, PREPROCESS_CHOICES
from .runner import JOB_TYPE, parse_stage_text

HELP = "Make a talking-head video from a photo and a voice recording (SadTalker)."
_POLL_S = 0.2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", "--source_image", required=True, type=Path, help="the portrait")
    parser.add_argument("--audio", "--driven_audio", required=True, type=Path, help="the voice recording")
    parser.add_argument("--out", type=Path, help="also copy the MP4 here (it is always kept in outputs/sadtalker)")
    parser.add_argument("--size", type=int, choices=(256, 512), default=256, help="face model resolution")
    parser.add_argument("--preprocess", choices=PREPROCESS_CHOICES, default="crop")
    parser.add_argument("--still", action="store_true", help="keep the head still")
    parser.add_argument("--pose-style", "--pose_style", type=int, default=0, help="head-motion style 0..45")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=2,
                        help=f"frames per network call, 1..{MAX_BATCH_SIZE}")
    parser.add_argument("--expression-scale", "--expression_scale", type=float, default=1.0)
    parser.add_argument("--no-blink", action="store_true", help="no eye blinks")
    parser.add_argument("--enhancer", help="face restorer for every frame: GFPGAN or RestoreFormer")
    parser.add_argument("--background-enhancer", "--background_enhancer", help="upscaler for the whole frame")
    parser.add_argument("--ref-eyeblink", "--ref_eyeblink", type=Path, help="video whose eye blinks are copied")
    parser.add_argument("--ref-pose", "--ref_pose", type=Path, help="video whose head motion is copied")
    parser.add_argument("--input-yaw", "--input_yaw", type=float, nargs="+", help="yaw path, e.g. -20 30 10")
    parser.add_argument("--input-pitch", "--input_pitch", type=float, nargs="+")
    parser.add_argument("--input-roll", "--input_roll", type=float, nargs="+")
    parser.add_argument("--seed", type=int, default=-1, help="-1: random; the same seed gives the same video")


def run(args: argparse.Namespace, studio: Any) -> int:
    try:
        request = _request(args)
    except OSError as e:
        print(f"error: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
        return 1
    studio.start_worker()
    job = studio.submit(JOB_TYPE, request)
    try:
        _follow(job)
    except KeyboardInterrupt:
        studio.cancel(job.id)
        job.wait(30)
        print("cancelled", file=sys.stderr)
        return 130
    if job.state.value != "done":
        print(f"error: {job.error or job.state.value}", file=sys.stderr)
        return 1
    for note in job.notes:
        print(f"note: {note}", file=sys.stderr)
    video = Path(job.result["video"])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video, args.out)
        video = args.out
    result = job.result
    print(f"{video} ({result['frames']} frames, {result['seconds']:g} s, seed {result['seed']})")
    return 0


def _request(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "image": file_to_base64(args.image), "audio": file_to_base64(args.audio), "audio_name": args.audio.name,
        "size": args.size, "preprocess": args.preprocess, "still_mode": args.still, "pose_style": args.pose_style,
        "batch_size": args.batch_size, "expression_scale": args.expression_scale, "use_blink": not args.no_blink,
        "enhancer": args.enhancer, "background_enhancer": args.background_enhancer,
        "ref_eyeblink": file_to_base64(args.ref_eyeblink) if args.ref_eyeblink else None,
        "ref_pose": file_to_base64(args.ref_pose) if args.ref_pose else None,
        "input_yaw": args.input_yaw, "input_pitch": args.input_pitch, "input_roll": args.input_roll,
        "seed": args.seed,
    }


def _follow(job: Any) -> None:
    """One tqdm bar over the whole job, its description the stage in progress."""
    from tqdm import tqdm

    with tqdm(total=1, unit="step", dynamic_ncols=True, file=sys.stderr) as bar:
        while not job.wait(_POLL_S):
            _update(bar, job)
        _update(bar, job)


def _update(bar: Any, job: Any) -> None:
    progress = job.progress
    if progress.total and bar.total != progress.total:
        bar.total = progress.total
    stages = parse_stage_text(progress.text)
    current = next((name for name, done, total in stages if done < total), "done")
    bar.set_description(current)
    bar.n = min(progress.step, bar.total or progress.step)
    bar.refresh()
