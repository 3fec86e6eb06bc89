"""Video output and reference-video input: real MP4 files written and read back through the bundled ffmpeg.

What a user would notice: the clip has every frame at 25 fps, odd sizes still play (padded to even), the voice is
in the same file and exactly as long as the picture, the settings comment survives, a failed or cancelled render
leaves no broken file behind, and unusable reference videos are refused with a message naming the file.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ._pkg import submodule

video = submodule("video")

FRAMES = 13
SECONDS = FRAMES / 25
AAC_TOLERANCE_S = 0.04  # about one AAC frame at 16 kHz (1024 samples = 64 ms, half of it either side)
COMMENT = json.dumps({"prompt": 'a "quoted" face', "name": "Zoë 日本語 ✓", "still": True}, ensure_ascii=False)


def _frame(index: int, width: int, height: int) -> np.ndarray:
    """Flat colours that change per frame: easy to check after lossy coding."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = (17 * index) % 256
    frame[..., 1] = 128
    frame[..., 2] = 200
    return frame


def _frames(count: int, width: int, height: int) -> Iterator[np.ndarray]:
    for index in range(count):
        yield _frame(index, width, height)


def _voice(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _leftovers(folder: Path, keep: set[str] = frozenset()) -> list[str]:
    return sorted(name.name for name in folder.iterdir() if name.name not in keep)


@pytest.mark.parametrize("size", [(64, 48), (65, 49)], ids=["even", "odd"])
@pytest.mark.parametrize("source", ["generator", "list"])
def test_write_mp4_frames_audio_comment(tmp_path: Path, size: tuple[int, int], source: str) -> None:
    width, height = size
    frames = _frames(FRAMES, width, height) if source == "generator" else list(_frames(FRAMES, width, height))
    out = tmp_path / "clip.mp4"
    info = video.write_mp4(out, frames, audio=_voice(SECONDS), comment=COMMENT)

    assert info == video.probe(out)
    assert (info.frames, info.fps) == (FRAMES, 25.0)
    assert (info.width, info.height) == video.even_size(width, height) == (width + width % 2, height + height % 2)
    assert info.has_audio
    assert info.audio_seconds == pytest.approx(SECONDS, abs=AAC_TOLERANCE_S)
    assert info.comment == COMMENT and json.loads(info.comment)["name"] == "Zoë 日本語 ✓"
    assert _leftovers(tmp_path) == ["clip.mp4"]  # no temporary WAV / partial MP4 left


@pytest.mark.parametrize("audio_seconds", [0.2, 2.0], ids=["short-padded", "long-cut"])
@pytest.mark.parametrize("source", ["generator", "list"])
def test_audio_is_cut_or_padded_to_the_video(tmp_path: Path, audio_seconds: float, source: str) -> None:
    frames = _frames(FRAMES, 32, 32) if source == "generator" else list(_frames(FRAMES, 32, 32))
    voice = (_voice(audio_seconds) * 32767).astype(np.int16)  # int16 samples are accepted too
    info = video.write_mp4(tmp_path / "clip.mp4", frames, audio=voice)
    assert info.frames == FRAMES
    assert info.audio_seconds == pytest.approx(SECONDS, abs=AAC_TOLERANCE_S)


def test_frames_are_streamed_not_collected(tmp_path: Path) -> None:
    """The writer holds at most the current frame: earlier ones are gone when the next is asked for."""
    alive: list[weakref.ref] = []
    most_alive = 0

    def frames() -> Iterator[np.ndarray]:
        nonlocal most_alive
        for index in range(40):
            frame = _frame(index, 48, 32)
            alive.append(weakref.ref(frame))
            most_alive = max(most_alive, sum(ref() is not None for ref in alive))
            yield frame
            del frame

    info = video.write_mp4(tmp_path / "clip.mp4", frames(), audio=_voice(1.6))
    assert info.frames == len(alive) == 40
    assert most_alive <= 2


def test_without_audio(tmp_path: Path) -> None:
    info = video.write_mp4(tmp_path / "silent.mp4", _frames(FRAMES, 64, 48))
    assert (info.frames, info.has_audio, info.audio_seconds, info.comment) == (FRAMES, False, None, None)
    assert info.seconds == pytest.approx(SECONDS)


def test_failure_mid_stream_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"

    def failing() -> Iterator[np.ndarray]:
        yield from _frames(5, 64, 48)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        video.write_mp4(out, failing(), audio=_voice(SECONDS), comment=COMMENT)
    assert _leftovers(tmp_path) == []

    out.write_bytes(b"previous result")  # a file already there survives a failed overwrite
    with pytest.raises(RuntimeError, match="renderer crashed"):
        video.write_mp4(out, failing(), audio=_voice(SECONDS))
    assert out.read_bytes() == b"previous result"
    assert _leftovers(tmp_path) == ["clip.mp4"]


def test_bad_frames_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    with pytest.raises(ValueError, match="no frames"):
        video.write_mp4(out, iter([]))
    with pytest.raises(ValueError, match="no frames"):
        video.write_mp4(out, [], audio=_voice(0.5))

    def resized() -> Iterator[np.ndarray]:
        yield from _frames(4, 64, 48)
        yield _frame(4, 48, 64)

    with pytest.raises(ValueError, match="frame 4 is 48x64, the video is 64x48"):
        video.write_mp4(out, resized(), audio=_voice(0.5))
    with pytest.raises(ValueError, match="RGB uint8"):
        video.write_mp4(out, [np.zeros((48, 64, 3), dtype=np.float32)])
    with pytest.raises(ValueError, match="expected 20 frames"):
        video.write_mp4(out, _frames(FRAMES, 64, 48), num_frames=20, audio=_voice(SECONDS))
    with pytest.raises(ValueError, match="mono"):
        video.write_mp4(out, _frames(3, 64, 48), audio=np.zeros((800, 2), dtype=np.float32))
    assert _leftovers(tmp_path) == []


def test_read_frames_of_written_video(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    video.write_mp4(out, _frames(FRAMES, 65, 49), audio=_voice(SECONDS))

    frames, fps = video.read_frames(out)
    assert fps == 25.0
    assert len(frames) == FRAMES
    assert all(frame.shape == (50, 66, 3) and frame.dtype == np.uint8 for frame in frames)
    for index in (0, 6, 12):  # colours survive H.264 + BT.709 tagging; the padding repeats the edge
        error = np.abs(frames[index].astype(int) - _frame(index, 66, 50).astype(int))
        assert error.max() <= 4, index

    assert len(video.read_frames(out, max_frames=4)[0]) == 4
    assert len(video.read_frames(out, max_seconds=0.2)[0]) == 5


@pytest.mark.parametrize("kind", ["text", "png", "empty", "missing"])
def test_unreadable_reference_videos(tmp_path: Path, kind: str) -> None:
    import cv2

    bad = tmp_path / f"reference_{kind}.mp4"
    if kind == "text":
        bad.write_text("this is not a video\n")
    elif kind == "png":
        ok, encoded = cv2.imencode(".png", np.zeros((16, 16, 3), dtype=np.uint8))
        bad.write_bytes(encoded.tobytes())
    elif kind == "empty":
        bad.write_bytes(b"")
    with pytest.raises(video.VideoInputError, match=bad.name) as caught:
        video.read_frames(bad)
    assert isinstance(caught.value, ValueError)
    if kind != "png":  # probe describes a picture; only read_frames refuses it as a reference video
        with pytest.raises(video.VideoInputError, match=bad.name):
            video.probe(bad)


def test_resize_to_output() -> None:
    square = np.zeros((256, 256, 3), dtype=np.uint8)
    square[:, 128:] = 255
    resized = video.resize_to_output(square, (200, 300))
    assert resized.shape == (300, 200, 3)
    assert resized[:, :95].max() == 0 and resized[:, 105:].min() == 255
    assert video.resize_to_output(square, (256, 256)) is square
    assert video.aspect_restored_size(256, (300, 400)) == (256, 341)
