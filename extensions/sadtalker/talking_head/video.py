"""Video output and reference-video input: rendered frames (+ the voice) -> one H.264/AAC MP4, and back.

Upstream (study.md §1.10) saves the frames with `imageio.mimsave`, cuts the audio with pydub and muxes the two with
`os.system('ffmpeg ...')`: the ffmpeg CLI on PATH, the cause of the endless "ffmpeg not found" reports. Here every
ffmpeg call goes to the binary that imageio-ffmpeg bundles (`imageio_ffmpeg.get_ffmpeg_exe()`), either through
imageio-ffmpeg's own functions or through `subprocess` with an argument list (never a shell), and pydub is not used.

Choices, each visible to a user:
- frames are streamed to the encoder one at a time, so a long clip never needs memory for all its frames;
- H.264 (libx264, CRF 18 by default: visually lossless for these small, smooth frames) in yuv420p, the one
  format every browser and phone plays; the RGB -> YUV conversion uses the BT.709 matrix and the file is tagged
  BT.709, so browsers (which assume BT.709 for untagged video) show the colours we rendered;
- yuv420p halves the chroma resolution, so width and height must be even. An odd side is PADDED by one pixel that
  repeats the last row/column, instead of imageio's default rescale to a multiple of 16 (which blurs every pixel
  and warns): the picture is unchanged, the video is at most one pixel wider/taller than the frames;
- the voice is muxed as AAC into the same file, cut or zero-padded to exactly frames / fps seconds. When the number
  of frames is known before the first one is encoded (a sized sequence, or `num_frames=`), the exact-length WAV
  goes into the same ffmpeg run as the frames (`write_frames(audio_path=...)`). A generator's length is known only
  at its end, and ffmpeg's `-shortest` is not exact (measured: 0.5 s of extra audio on a 0.52 s clip), so then the
  video is encoded first and the exact audio is added in a second, stream-copy ffmpeg run (no re-encode of video);
- the file is written under a hidden temporary name in the target folder and renamed into place only after ffmpeg
  finished and the result was checked (`probe`): a failed or cancelled write never leaves a truncated file under
  the final name, and the temporary files are removed whatever happens;
- `-movflags +faststart` puts the index first, so a browser can start playing before the whole file has loaded.

Reading (`read_frames`, for reference videos of eye blinks or head pose) accepts anything ffmpeg decodes, refuses
still images, unreadable and empty files with `VideoInputError` (a ValueError naming the file), and stops decoding
at `max_frames` / `max_seconds`.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

FPS = 25
SAMPLE_RATE = 16000
DEFAULT_CRF = 18
AUDIO_BITRATE = "96k"
_FFMPEG_TIMEOUT_S = 600
_END = object()
# Input formats of single pictures (plus every "<codec>_pipe" one): ffmpeg opens a PNG renamed to .mp4 as a
# one-frame "video", which is no use as a reference video.
_STILL_IMAGE_FORMATS = ("image2", "image2pipe")


class VideoInputError(ValueError):
    """A video the user gave cannot be used; the message names the file and says why."""


class DiskFullError(OSError):
    """The output folder's disk filled up while the video was written; nothing was left behind."""

    def __init__(self, folder: Path) -> None:
        super().__init__(errno.ENOSPC, f"the disk holding {folder} is full; free space on it and try again "
                                       "(nothing was saved)")

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as ffmpeg reads it back.

    `frames`: video frames (packets of the first video stream); `fps`: its frame rate; `width`/`height`: the
    displayed size; `audio_seconds`: decoded length of the first audio stream (None without one); `comment`:
    the container's comment tag (None when absent).
    """

    frames: int
    fps: float
    width: int
    height: int
    has_audio: bool
    audio_seconds: float | None = None
    comment: str | None = None

    @property
    def seconds(self) -> float:
        """Duration of the video stream (frames / fps)."""
        return self.frames / self.fps if self.fps > 0 else 0.0


# --------------------------------------------------------------------------------------------------------------
# Frame size helpers
# --------------------------------------------------------------------------------------------------------------


def even_size(width: int, height: int) -> tuple[int, int]:
    """The size the MP4 gets for frames of (width, height): each odd side padded by one pixel (yuv420p)."""
    return width + width % 2, height + height % 2


def aspect_restored_size(render_size: int, crop_size: tuple[int, int]) -> tuple[int, int]:
    """Upstream's output size for the `size` x `size` render of a crop of (w, h): (size, int(size * h / w)).

    Upstream keeps the width at the render size and only restores the crop's aspect ratio; pass the result to
    `resize_to_output` for upstream's frames, or pass the crop's own size (`CropPlan.output_size`) instead.
    """
    width, height = crop_size
    if width <= 0 or height <= 0 or render_size <= 0:
        raise ValueError(f"sizes must be positive, got render {render_size} and crop {crop_size}")
    return render_size, max(1, int(render_size * height / width))


def resize_to_output(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The rendered square frame resized (OpenCV bilinear, as upstream) to `size` = (w, h) of the crop region.

    The renderer works on squares; the crop it came from need not be square, so its aspect ratio is restored here
    before encoding or pasting back. A frame already of that size is returned as is.
    """
    import cv2

    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"output size must be positive, got {size}")
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def write_mp4(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float = FPS,
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    comment: str | None = None,
    crf: int = DEFAULT_CRF,
    num_frames: int | None = None,
) -> VideoInfo:
    """Encode RGB uint8 (H, W, 3) frames, all of one size, into an H.264 MP4 at `path`; returns what was written.

    `frames` may be any iterable and is consumed one frame at a time (a generator is never turned into a list).
    `audio`: mono waveform (float in [-1, 1] or int16) at `sample_rate`, muxed as AAC and cut or zero-padded to
    exactly frames / fps seconds. `num_frames`: how many frames the iterable yields, when the caller knows it
    (a sized sequence's `len` is used by itself); it lets the audio be encoded in the same ffmpeg run, and a
    different count then raises ValueError. `comment`: stored in the MP4's comment tag (any text, e.g. JSON).
    `crf`: libx264 constant rate factor, 0 (lossless) .. 51 (worst); 18 is visually lossless.

    Raises ValueError for no frames, a frame of another size or type, or bad audio; the exception of a failing
    `frames` iterable propagates. In every failure case nothing is left at `path` (an existing file there is
    kept) and no temporary file remains.
    """
    path = Path(path)
    fps_value = _check_fps(fps)
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be between 0 and 51, got {crf}")
    if comment is not None and "\x00" in comment:
        raise ValueError("the comment must not contain NUL characters")
    wave = _check_audio(audio, sample_rate) if audio is not None else None
    expected = num_frames if num_frames is not None else (len(frames) if isinstance(frames, Sized) else None)
    if expected is not None and expected < 1:
        raise ValueError("there are no frames to write")

    iterator = iter(frames)
    first = next(iterator, _END)
    if first is _END:
        raise ValueError("there are no frames to write")
    _check_frame(first, None, 0)
    height, width = first.shape[:2]
    size = even_size(width, height)
    stream = _prepend([first], iterator)
    del first  # only the frame being encoded stays referenced

    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"the output folder does not exist: {folder}")
    token = f".{path.stem}.{uuid.uuid4().hex[:12]}"
    # Hidden and ending in ".tmp", the app's convention for temporaries: a crash mid-encode (kill -9) leaves
    # them behind, and the start-up sweep (modules.engine.outputs.sweep) knows them by that name alone.
    # ffmpeg does not need the extension: "-f mp4" names the output format and inputs are probed by content.
    part = folder / f"{token}.part.mp4.tmp"  # the final file until it is complete and checked
    wav_path = folder / f"{token}.audio.wav.tmp"
    video_only = folder / f"{token}.video.mp4.tmp"  # generator + audio: frames first, audio muxed in afterwards
    temporaries = (part, wav_path, video_only)
    one_pass = wave is not None and expected is not None

    try:
        if one_pass:
            _write_wav(wav_path, _fit_audio(wave, expected, fps_value, sample_rate), sample_rate)
        target = video_only if (wave is not None and not one_pass) else part
        output_params = ["-crf", str(int(crf)), *_COLOUR_PARAMS, "-movflags", "+faststart", "-f", "mp4"]
        if comment is not None and target is part:
            output_params += ["-metadata", f"comment={comment}"]
        if one_pass:
            output_params += ["-b:a", AUDIO_BITRATE]
        count = _encode(
            target,
            stream,
            (width, height),
            size,
            fps=fps,
            output_params=output_params,
            audio_path=wav_path if one_pass else None,
        )
        if expected is not None and count != expected:
            raise ValueError(f"expected {expected} frames, the frames iterable gave {count}")
        if wave is not None and not one_pass:
            _write_wav(wav_path, _fit_audio(wave, count, fps_value, sample_rate), sample_rate)
            _mux_audio(video_only, wav_path, part, comment)
        try:
            info = probe(part)
        except VideoInputError as error:  # our own output: an encoder failure, not the user's input
            raise RuntimeError(f"ffmpeg did not write a readable video for {path.name}: {error}") from error
        if info.frames != count or info.has_audio != (wave is not None):
            raise RuntimeError(
                f"ffmpeg wrote {info.frames} of {count} frames"
                + (" and no audio" if wave is not None and not info.has_audio else "")
                + f" to {path.name}"
            )
        os.replace(part, path)
        return info
    except Exception as error:
        # A full disk reaches us as ffmpeg's broken pipe, a truncated file it cannot read back, or libsndfile's
        # "System error.": all unreadable to a user. Checked before the temporaries go (they hold the space).
        if isinstance(error, (OSError, RuntimeError)) and _disk_full(folder, error):  # never a cancel or bad frame
            raise DiskFullError(folder) from error
        raise
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


_NEARLY_FULL_BYTES = 1 << 20


def _disk_full(folder: Path, error: BaseException) -> bool:
    """Whether `error` while writing into `folder` came from a full disk (or quota)."""
    chained: BaseException | None = error
    while chained is not None:
        if isinstance(chained, OSError) and chained.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return True
        if "No space left on device" in str(chained):
            return True
        chained = chained.__cause__ or chained.__context__
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL_BYTES
    except OSError:
        return False


# RGB -> YUV with the BT.709 matrix (limited range), and the tags that say so.
_COLOUR_PARAMS = (
    "-vf",
    "scale=out_color_matrix=bt709:out_range=tv",
    "-colorspace",
    "bt709",
    "-color_primaries",
    "bt709",
    "-color_trc",
    "bt709",
)


def _encode(
    target: Path,
    frames: Iterator[np.ndarray],
    frame_size: tuple[int, int],
    size: tuple[int, int],
    *,
    fps: float,
    output_params: list[str],
    audio_path: Path | None,
) -> int:
    """Stream the frames into imageio-ffmpeg's writer; returns how many were written.

    On any exception (a frame check or the caller's iterable) the writer is closed normally, so ffmpeg exits by
    itself before the caller deletes its half-written file (a killed process can still hold the file on Windows).
    """
    import imageio_ffmpeg

    width, height = frame_size
    padded = np.empty((size[1], size[0], 3), dtype=np.uint8) if size != (width, height) else None
    writer = imageio_ffmpeg.write_frames(
        str(target),
        size,
        fps=fps if isinstance(fps, Fraction) else float(fps),
        quality=None,  # the CRF goes in output_params
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=1,  # evenness is handled here (padding), not by imageio's rescale
        ffmpeg_log_level="error",
        output_params=list(output_params),
        audio_path=str(audio_path) if audio_path is not None else None,
        audio_codec="aac" if audio_path is not None else None,
    )
    writer.send(None)
    count = 0
    try:
        for frame in frames:
            _check_frame(frame, (height, width), count)
            if padded is None:
                writer.send(np.ascontiguousarray(frame))
            else:
                padded[:height, :width] = frame
                padded[height:, :width] = frame[height - 1 :]  # repeat the last row / column
                padded[:, width:] = padded[:, width - 1 : width]
                writer.send(padded)
            count += 1
    finally:
        writer.close()
    return count


def _prepend(first: list[np.ndarray], rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """`first`'s one frame, then `rest`; the list is emptied so the frame is not kept once it is encoded."""
    yield first.pop()
    yield from rest


def _check_frame(frame: object, shape: tuple[int, int] | None, index: int) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {tuple(frame.shape)}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame {index}: expected an RGB uint8 array (H, W, 3), got {got}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"frame {index} is empty ({frame.shape[1]}x{frame.shape[0]})")
    if shape is not None and frame.shape[:2] != shape:
        raise ValueError(
            f"frame {index} is {frame.shape[1]}x{frame.shape[0]}, the video is {shape[1]}x{shape[0]}; "
            "all frames must have the same size"
        )


def _check_fps(fps: float) -> float:
    value = float(fps)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return value


def _check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """A mono float32 waveform in [-1, 1] from float or int16 samples; ValueError for anything else."""
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate}")
    wave = np.asarray(audio)
    if wave.ndim == 2 and wave.shape[1] == 1:
        wave = wave[:, 0]
    if wave.ndim != 1:
        raise ValueError(f"audio must be a mono waveform (n,), got shape {tuple(wave.shape)}")
    if wave.dtype == np.int16:
        return wave.astype(np.float32) / 32768.0
    if not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f"audio must be float or int16 samples, got {wave.dtype}")
    if not np.all(np.isfinite(wave)):
        raise ValueError("audio contains invalid samples (NaN or infinity)")
    return wave.astype(np.float32, copy=False)


def _fit_audio(wave: np.ndarray, frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """Cut or zero-pad to the video's duration: round(frames * sample_rate / fps) samples."""
    length = int(round(frames * sample_rate / fps))
    if len(wave) >= length:
        return wave[:length]
    return np.pad(wave, (0, length - len(wave)))


def _write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    import soundfile

    soundfile.write(str(path), wave, int(sample_rate), subtype="FLOAT", format="WAV")


def _mux_audio(video: Path, wav: Path, target: Path, comment: str | None) -> None:
    """Copy the encoded video stream and add the exact-length audio as AAC (one ffmpeg run, no shell)."""
    command = [
        _ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-i", str(video), "-i", str(wav),
        "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", AUDIO_BITRATE,
    ]  # fmt: skip
    if comment is not None:
        command += ["-metadata", f"comment={comment}"]
    command += ["-movflags", "+faststart", "-f", "mp4", str(target)]
    result = _run(command)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not add the audio to the video: {_last_line(result.stderr)}")


# --------------------------------------------------------------------------------------------------------------
# Probing and reading
# --------------------------------------------------------------------------------------------------------------


def probe(path: str | Path) -> VideoInfo:
    """Frame count, frame rate, size, audio length and comment of a video, from one run of the bundled ffmpeg.

    The video stream is stream-copied (counted, not decoded) and the audio is decoded, so `audio_seconds` is the
    exact number of samples that play (encoder delay removed) over the sample rate. VideoInputError when the
    file is missing, unreadable or has no video stream.
    """
    path = _existing(path)
    command = [
        _ffmpeg(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "verbose", "-i", str(path),
        "-map", "0:v:0?", "-map", "0:a:0?", "-c:v", "copy", "-f", "null", "-",
        "-f", "ffmetadata", "pipe:1",
    ]  # fmt: skip
    result = _run(command)
    log = result.stderr.decode("utf-8", "replace")
    header = _input_header(log)
    if result.returncode != 0 or header is None:
        raise VideoInputError(f"{path.name} is not a video we can read ({_last_line(result.stderr)})")
    video = _first_stream(header, "Video")
    if video is None:
        raise VideoInputError(f"{path.name} has no video track")
    audio = _first_stream(header, "Audio")
    frames = _packets_read(log, video[0])
    audio_seconds = None
    if audio is not None:
        samples = re.search(rf"Input stream #0:{audio[0]} \(audio\):.*\((\d+) samples\)", log)
        rate = re.search(r"(\d+) Hz", audio[1])
        if samples and rate and int(rate.group(1)) > 0:
            audio_seconds = int(samples.group(1)) / int(rate.group(1))
    width, height = _stream_size(video[1])
    metadata = _parse_ffmetadata(result.stdout.decode("utf-8", "replace"))
    return VideoInfo(
        frames=frames,
        fps=_stream_fps(video[1]),
        width=width,
        height=height,
        has_audio=audio is not None,
        audio_seconds=audio_seconds,
        comment=metadata.get("comment"),
    )


def read_frames(
    path: str | Path, max_frames: int | None = None, max_seconds: float | None = None
) -> tuple[list[np.ndarray], float]:
    """RGB uint8 (H, W, 3) frames of a video and its frame rate, for reference videos (blinks, head pose).

    Any format the bundled ffmpeg decodes is accepted (rotation metadata applied). Only the first `max_frames`
    frames / `max_seconds` seconds are decoded (None: no limit); the caller keeps them all in memory, so pass a
    limit for user files. VideoInputError (naming the file) for a missing, empty or unreadable file, a still
    image and a video without frames.
    """
    import imageio_ffmpeg

    path = _existing(path)
    if max_frames is not None and int(max_frames) < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    result = _run([_ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path)])  # header only: exits with "no output"
    header = _input_header(result.stderr.decode("utf-8", "replace"))
    if header is None:
        raise VideoInputError(f"{path.name} is not a video we can read ({_last_line(result.stderr)})")
    stream = _first_stream(header, "Video")
    if stream is None:
        raise VideoInputError(f"{path.name} has no video track")
    container = re.match(r"Input #0, (.+?), from ", header)
    formats = container.group(1).split(",") if container else []
    if any(name in _STILL_IMAGE_FORMATS or name.endswith("_pipe") for name in formats):
        raise VideoInputError(f"{path.name} is a still image, not a video; choose a video file")

    input_params = ["-t", f"{max_seconds:.6f}"] if max_seconds is not None else []
    output_params = ["-frames:v", str(int(max_frames))] if max_frames is not None else []
    frames: list[np.ndarray] = []
    reader = imageio_ffmpeg.read_frames(str(path), input_params=input_params, output_params=output_params)
    try:
        meta = next(reader)
        width, height = meta["size"]
        fps = float(meta.get("fps") or 0.0) or _stream_fps(stream[1]) or float(FPS)
        for raw in reader:
            frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3).copy())
            if max_frames is not None and len(frames) >= max_frames:
                break
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        raise VideoInputError(f"{path.name} could not be decoded as a video: {_last_line(str(error))}") from error
    finally:
        reader.close()  # stops ffmpeg: frames beyond the limit are never decoded
    if not frames:
        raise VideoInputError(f"{path.name} has no video frames")
    return frames, fps


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VideoInputError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoInputError(f"{path.name} is empty (0 bytes)")
    return path


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(command: list[str]):  # -> subprocess.CompletedProcess[bytes]
    import subprocess

    try:
        return subprocess.run(command, capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"ffmpeg took longer than {_FFMPEG_TIMEOUT_S} s and was stopped") from error


def _last_line(text: bytes | str) -> str:
    """The last informative line of an ffmpeg log: usually the reason it failed."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [
        line.strip()
        for line in text.replace("\r", "\n").splitlines()
        if line.strip() and not line.startswith(("Exiting with exit code", "[AVIOContext"))
    ]
    return lines[-1] if lines else "no details"


def _input_header(log: str) -> str | None:
    """The "Input #0, <format>, from ..." block of an ffmpeg log (up to the stream mapping), None if absent."""
    start = log.find("Input #0,")
    if start < 0:
        return None
    end = len(log)
    for marker in ("\nStream mapping:", "\nOutput #0", "\nAt least one output file"):
        found = log.find(marker, start)
        if found >= 0:
            end = min(end, found)
    return log[start:end]


def _first_stream(header: str, kind: str) -> tuple[int, str] | None:
    """(index, description) of the first input stream of `kind` ("Video" / "Audio"); attached pictures skipped."""
    for match in re.finditer(rf"^\s*Stream #0:(\d+)[^:\n]*: {kind}: (.*)$", header, flags=re.MULTILINE):
        if "(attached pic)" not in match.group(2):
            return int(match.group(1)), match.group(2)
    return None


def _packets_read(log: str, index: int) -> int:
    match = re.search(rf"Input stream #0:{index} \(video\): (\d+) packets read", log)
    return int(match.group(1)) if match else 0


def _stream_size(description: str) -> tuple[int, int]:
    match = re.search(r"(?:^|[ ,])(\d{1,5})x(\d{1,5})(?=[ ,\[]|$)", description)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _stream_fps(description: str) -> float:
    """The stream's "N fps" (or, failing that, "N tbr") figure; 0.0 when ffmpeg does not know it."""
    for unit in ("fps", "tbr"):
        match = re.search(rf"([\d.]+)(k?) {unit}\b", description)
        if match:
            return float(match.group(1)) * (1000.0 if match.group(2) else 1.0)
    return 0.0


def _parse_ffmetadata(text: str) -> dict[str, str]:
    """Global key=value pairs of ffmpeg's FFMETADATA output (backslash escapes undone, multi-line values kept)."""
    entries: dict[str, str] = {}
    body = text.split("\n", 1)[1] if text.startswith(";FFMETADATA") else text
    current: list[str] = []
    escaped = False
    for char in body + "\n":
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "\n":
            line = "".join(current)
            current = []
            if line.startswith("["):  # [STREAM] / [CHAPTER] sections follow the global ones
                break
            if line and not line.startswith((";", "#")) and "=" in line:
                key, value = line.split("=", 1)
                entries.setdefault(key, value)
        else:
            current.append(char)
    return entries
