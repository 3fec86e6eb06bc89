"""`python launch.py sadtalker ...` as a user runs it: a separate process, the real face detector and landmark
networks (random weights in models/GFPGAN: they find no real face, which is why the `resize` preprocess, which
crops nothing, is used), tiny SadTalker checkpoints, and a progress bar on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server import REPO
from tests.fixtures.talking_head_inputs import png_bytes, portrait, voice, wav_bytes, write_random_face_models
from tests.fixtures.tiny_sadtalker import write_tiny_sadtalker
from tests.sadtalker._pkg import submodule


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("cli-data")
    write_tiny_sadtalker(data / "models" / "SadTalker")
    write_random_face_models(data / "models" / "GFPGAN")
    (data / "face.png").write_bytes(png_bytes(portrait(300, 300)))
    (data / "voice.wav").write_bytes(wav_bytes(voice(0.25)))  # 6 frames
    return data


def sadtalker(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COMMANDLINE_ARGS"}
    return subprocess.run([sys.executable, str(REPO / "launch.py"), "sadtalker", "--skip-install", "--data-dir",
                           str(data), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_command_writes_the_video_and_reports_it(data: Path) -> None:
    out = data / "result" / "talking.mp4"
    done = sadtalker(data, "--image", str(data / "face.png"), "--audio", str(data / "voice.wav"), "--out", str(out),
                     "--preprocess", "resize", "--batch_size", "3", "--seed", "11")
    assert done.returncode == 0, done.stderr
    info = submodule("video").probe(out)
    assert info.frames == 6 and info.has_audio and info.width == 256
    assert json.loads(info.comment)["seed"] == 11
    assert "6 frames" in done.stdout and "seed 11" in done.stdout
    assert "render" in done.stderr and "100%" in done.stderr  # tqdm's bar, labelled with the stage
    kept = list((data / "outputs" / "sadtalker").rglob("*-11.mp4"))
    assert len(kept) == 1 and kept[0].with_suffix(".json").is_file()


def test_bad_inputs_exit_with_a_message(data: Path) -> None:
    (data / "notes.txt").write_text("not a picture")
    done = sadtalker(data, "--image", str(data / "notes.txt"), "--audio", str(data / "voice.wav"))
    assert done.returncode == 1 and "could not be read as a picture" in done.stderr
    done = sadtalker(data, "--image", str(data / "face.png"), "--audio", str(data / "missing.wav"))
    assert done.returncode == 1 and "missing.wav" in done.stderr
    done = sadtalker(data, "--image", str(data / "face.png"))
    assert done.returncode == 2 and "--audio" in done.stderr
    done = subprocess.run([sys.executable, str(REPO / "launch.py"), "talkinghead", "--skip-install",
                           "--data-dir", str(data)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown command 'talkinghead'" in done.stderr and "sadtalker" in done.stderr
