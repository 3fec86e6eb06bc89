"""Audio stage: a voice recording -> 16 kHz mono waveform -> normalised mel spectrogram -> one 80x16 window per frame.

Reproduces upstream `src/utils/audio.load_wav` / `melspectrogram` (Wav2Lip hparams) and the window loop of
`src/generate_batch.get_data` (OpenTalker/SadTalker cd4c046, see shared/sadtalker/study.md §1.5):

- decode to mono float32 at 16 kHz like `librosa.load(path, sr=16000)`: channels averaged, other rates resampled
  with soxr "HQ" (librosa's default). Formats libsndfile cannot read (m4a/aac, video containers) are decoded by
  the ffmpeg binary that imageio-ffmpeg bundles, never an ffmpeg found on PATH;
- `num_frames = int(len / 640)` video frames at 25 fps; the waveform is cut (or zero-padded) to that length;
- mel: pre-emphasis 0.97, STFT (n_fft 800, hop 200, periodic Hann, centred with ZERO padding: librosa >= 0.9),
  magnitude, 80 Slaney mel bands 55-7600 Hz, `20 log10(max(1e-5, x)) - 20`, `clip(8 (S + 100) / 100 - 4, -4, 4)`;
- window of frame i: 16 mel frames from `int(80 (i - 2) / 25)` (truncated toward zero), indices clamped to the clip.

The spectrogram is computed with numpy alone (float64, as upstream) and resampling calls soxr directly, so this
module never pays librosa's import time (numba). Both give librosa's numbers: the mel windows match the golden
case exactly, and decoded wav/flac/ogg/opus files equal `librosa.load(path, sr=16000)` (checked when written).
Bad input raises `AudioInputError` (a ValueError) with a message written for the user.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 samples of audio per video frame

N_FFT = 800
HOP_LENGTH = 200
WIN_LENGTH = 800
NUM_MELS = 80
FMIN, FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
MEL_FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # 80
MEL_WINDOW = 16  # mel frames per video frame window (0.2 s)
MEL_WINDOW_LEAD = 2  # a window starts this many video frames before its own frame

DEFAULT_MAX_SECONDS = 600.0
# A peak below this level carries no speech the networks could follow; such a file is refused as silent.
DEFAULT_SILENCE_DBFS = -60.0
# Extra decoding beyond the limit, so that "too long" is detected without decoding a whole long file.
_OVERRUN_SECONDS = 1.0
# A WAV whose data falls short of its header by more than this is refused as truncated (less is padding slack).
_TRUNCATION_TOLERANCE_S = 0.05


class AudioInputError(ValueError):
    """The audio the user gave cannot drive a talking head; the message says why and what to do."""


@dataclass(frozen=True)
class AudioFeatures:
    """What the coefficient stage needs from a recording.

    `wav` is the waveform cut to `num_frames * 640` samples (the audio track that matches the video);
    `mel` (n_mel_frames, 80) float64; `indiv_mels` (num_frames, 80, 16) float32, one window per video frame.
    """

    wav: np.ndarray
    num_frames: int
    mel: np.ndarray
    indiv_mels: np.ndarray

    @property
    def seconds(self) -> float:
        return self.num_frames / FPS


# --------------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------------


def load_audio(
    path: str | Path,
    *,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    silence_dbfs: float = DEFAULT_SILENCE_DBFS,
) -> np.ndarray:
    """Decode `path` to a mono float32 waveform at 16 kHz and check that it can drive a video.

    Raises `AudioInputError` for a missing file, a file that is not audio, a recording longer than
    `max_seconds` (None: no limit), one shorter than one video frame (40 ms) and a silent one.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"audio file not found: {path}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    samples, rate = _decode(path, max_seconds)
    wav = _to_mono_16k(samples, rate)
    check_waveform(wav, max_seconds=max_seconds, silence_dbfs=silence_dbfs, name=path.name)
    return wav


def _decode(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """(samples (n, channels) float32, sample rate). libsndfile first (wav, flac, ogg, mp3), then ffmpeg."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception:  # libsndfile does not know the format: let ffmpeg try before calling it "not audio"
        return _decode_with_ffmpeg(path, max_seconds)
    if max_seconds is not None and info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
        # Refused from the header alone: a long file is never decoded.
        _raise_too_long(path.name, info.frames / info.samplerate, max_seconds)
    if info.format in ("WAV", "WAVEX"):
        _check_complete_wav(path)
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise AudioInputError(f"{path.name} could not be decoded as audio: {error}") from error
    return samples, int(rate)


def _check_complete_wav(path: Path) -> None:
    """Refuse a WAV cut short: libsndfile would read the part that is there as a complete, shorter recording."""
    from .wav_header import wav_length

    length = wav_length(path)
    if length is not None and length.missing_seconds > _TRUNCATION_TOLERANCE_S:
        raise AudioInputError(
            f"{path.name} is truncated: its header announces {length.declared_seconds:.1f} s of audio but the file "
            f"holds only {length.present_seconds:.1f} s (the upload or copy stopped early); use the complete file"
        )


def _decode_with_ffmpeg(path: Path, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode through imageio-ffmpeg's bundled ffmpeg into float WAV (native rate and channels) on a pipe.

    Resampling and down-mixing stay ours (`_to_mono_16k`), so every format goes through the same arithmetic.
    The argument list is passed without a shell; `-t` bounds the work on an over-long file.
    """
    import subprocess

    import imageio_ffmpeg
    import soundfile

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path)]
    if max_seconds is not None:
        command += ["-t", f"{max_seconds + _OVERRUN_SECONDS:.3f}"]
    command += ["-vn", "-map", "0:a:0", "-f", "wav", "-acodec", "pcm_f32le", "-"]
    try:
        result = subprocess.run(command, capture_output=True, timeout=600, check=False)
    except subprocess.TimeoutExpired as error:
        raise AudioInputError(f"{path.name}: decoding took too long and was stopped") from error
    if result.returncode != 0 or not result.stdout:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = f" ({detail[-1]})" if detail else ""
        raise AudioInputError(
            f"{path.name} is not an audio file we can read{reason}; use wav, mp3, m4a, ogg or flac"
        )
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    return samples, int(rate)


def _to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Average the channels and resample to 16 kHz exactly as `librosa.load(path, sr=16000)` does.

    librosa 0.11 resamples with soxr at "HQ" and then pads with zeros (or cuts) to ceil(n * 16000 / rate)
    samples; we call soxr (librosa's own dependency) the same way, which spares librosa's slow first import.
    """
    wav = samples[:, 0].copy() if samples.shape[1] == 1 else np.mean(samples, axis=1, dtype=np.float32)
    if rate != SAMPLE_RATE and wav.size:
        import soxr

        length = int(np.ceil(wav.shape[0] * (float(SAMPLE_RATE) / rate)))
        wav = soxr.resample(wav, rate, SAMPLE_RATE, quality="soxr_hq")
        wav = wav[:length] if wav.shape[0] >= length else np.pad(wav, (0, length - wav.shape[0]))
    return np.ascontiguousarray(wav, dtype=np.float32)


def _raise_too_long(name: str, seconds: float | None, max_seconds: float) -> None:
    length = f" ({seconds:.1f} s)" if seconds is not None else ""
    raise AudioInputError(
        f"{name} is too long{length}: the limit is {max_seconds:g} s. Cut the recording or raise the limit."
    )


def check_waveform(
    wav: np.ndarray,
    *,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    silence_dbfs: float = DEFAULT_SILENCE_DBFS,
    name: str = "the audio",
) -> None:
    """Refuse a 16 kHz waveform that is over the limit, shorter than one video frame, or silent."""
    seconds = len(wav) / SAMPLE_RATE
    if max_seconds is not None and seconds > max_seconds:
        # A file decoded by ffmpeg stops at the limit plus the overrun: its true length is then unknown.
        known = seconds < max_seconds + _OVERRUN_SECONDS
        _raise_too_long(name, seconds if known else None, max_seconds)
    if frame_count(len(wav)) < 1:
        raise AudioInputError(
            f"{name} is too short ({seconds * 1000:.0f} ms): at least {1000 / FPS:.0f} ms (one video frame) "
            "is needed"
        )
    if not np.all(np.isfinite(wav)):
        raise AudioInputError(f"{name} contains invalid samples (NaN or infinity)")
    peak = float(np.max(np.abs(wav)))
    if peak == 0.0:
        raise AudioInputError(f"{name} is silent (every sample is zero); record or choose a voice recording")
    level = 20 * math.log10(peak)
    if level < silence_dbfs:
        raise AudioInputError(
            f"{name} is almost silent (peak {level:.0f} dBFS, below {silence_dbfs:g} dBFS); "
            "use a louder recording"
        )


# --------------------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------------------


def frame_count(num_samples: int) -> int:
    """Video frames at 25 fps covered by `num_samples` at 16 kHz: int(len / 640) (a partial frame is dropped)."""
    return int(num_samples / SAMPLES_PER_FRAME)


def fit_to_frames(wav: np.ndarray, num_frames: int) -> np.ndarray:
    """Cut or zero-pad the waveform to exactly `num_frames * 640` samples (upstream `crop_pad_audio`)."""
    length = num_frames * SAMPLES_PER_FRAME
    if len(wav) >= length:
        return wav[:length]
    return np.pad(wav, (0, length - len(wav)))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa `htk=False`): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    mels = hz / f_sp
    high = hz >= min_log_hz
    return np.where(high, min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    freqs = f_sp * mels
    high = mels >= min_log_mel
    return np.where(high, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """(80, 401) triangular Slaney-normalised filters, float32 like `librosa.filters.mel`'s default dtype."""
    fft_freqs = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), NUM_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    # librosa stores the triangles in float32 and then normalises in place: the same two roundings here.
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney "area" normalisation
    weights.flags.writeable = False
    return weights


def _stft_magnitude(signal: np.ndarray) -> np.ndarray:
    """|STFT| (401, frames): periodic Hann of 800, hop 200, centred with zero padding (librosa >= 0.9)."""
    padded = np.pad(signal, N_FFT // 2, mode="constant")
    count = 1 + (len(padded) - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[:: HOP_LENGTH][:count]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)  # scipy hann(800, sym=False)
    return np.abs(np.fft.rfft(frames * window, axis=1)).T


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """Normalised mel spectrogram (n_mel_frames, 80), float64; n_mel_frames = 1 + len(wav) // 200."""
    signal = np.asarray(wav, dtype=np.float64)
    emphasised = np.empty_like(signal)
    if signal.size:
        emphasised[0] = signal[0]
        emphasised[1:] = signal[1:] - PREEMPHASIS * signal[:-1]  # lfilter([1, -0.97], [1], x)
    mel = mel_basis() @ _stft_magnitude(emphasised)
    min_level = 10.0 ** (MIN_LEVEL_DB / 20)  # 1e-5
    level_db = 20 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    scaled = 2 * MAX_ABS_VALUE * ((level_db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).T


def mel_window_starts(num_frames: int) -> np.ndarray:
    """First mel frame of each video frame's window: int(80 * (i - 2) / 25), truncated toward zero."""
    # Python's int() truncates toward zero: frame 0 starts at -6 (not -7), frame 1 at -3.
    return np.array(
        [int(MEL_FRAMES_PER_SECOND * ((i - MEL_WINDOW_LEAD) / float(FPS))) for i in range(num_frames)],
        dtype=np.int64,
    )


def mel_windows(mel: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames, 80, 16) float32: window i holds mel frames start_i .. start_i+15, clamped to the clip."""
    index = mel_window_starts(num_frames)[:, None] + np.arange(MEL_WINDOW)[None, :]
    index = np.clip(index, 0, mel.shape[0] - 1)
    return np.ascontiguousarray(mel[index].transpose(0, 2, 1), dtype=np.float32)


def audio_features(wav: np.ndarray) -> AudioFeatures:
    """Features of a 16 kHz mono waveform (call `check_waveform` first for user input)."""
    num_frames = frame_count(len(wav))
    if num_frames < 1:
        raise AudioInputError(f"the audio is too short: at least {1000 / FPS:.0f} ms (one video frame) is needed")
    wav = fit_to_frames(np.asarray(wav, dtype=np.float32), num_frames)
    mel = melspectrogram(wav)
    return AudioFeatures(wav=wav, num_frames=num_frames, mel=mel, indiv_mels=mel_windows(mel, num_frames))


def load_audio_features(
    path: str | Path,
    *,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    silence_dbfs: float = DEFAULT_SILENCE_DBFS,
) -> AudioFeatures:
    """`load_audio` then `audio_features`: a file to the mel windows of every video frame."""
    return audio_features(load_audio(path, max_seconds=max_seconds, silence_dbfs=silence_dbfs))


def idle_features(seconds: float) -> AudioFeatures:
    """Upstream's idle mode: no voice, all-zero mel windows for `seconds * 25` frames (head motion and blinks only)."""
    num_frames = int(seconds * FPS)
    if num_frames < 1:
        raise AudioInputError(f"idle length must be at least {1 / FPS:g} s, got {seconds:g} s")
    silent = np.zeros(num_frames * SAMPLES_PER_FRAME, dtype=np.float32)
    return AudioFeatures(
        wav=silent,
        num_frames=num_frames,
        mel=np.zeros((0, NUM_MELS)),
        indiv_mels=np.zeros((num_frames, NUM_MELS, MEL_WINDOW), dtype=np.float32),
    )
