"""Audio stage: golden case b (waveform -> mel -> per-frame windows), decoding of common formats, and the
messages for audio that cannot drive a video (real bad files written by the tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch

from ._pkg import submodule

audio = submodule("audio")


def _tone(seconds: float, rate: int = 16000, channels: int = 1, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    voices = [amplitude * np.sin(2 * np.pi * (220 + 110 * c) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
              for c in range(channels)]
    return np.stack(voices, axis=1).astype(np.float32)


def test_b_audio_features(load_case: Any) -> None:
    case = load_case("b_audio_features")
    wav = case.tensors["wav_int16"].numpy().astype(np.float32) / 32768  # what librosa.load gives for the file
    features = audio.audio_features(wav)
    got = {
        "mel": torch.from_numpy(features.mel),
        "indiv_mels": torch.from_numpy(features.indiv_mels),
        "num_frames": torch.tensor([features.num_frames]),
        "window_start": torch.from_numpy(audio.mel_window_starts(features.num_frames)),
    }
    print(case.check(got))
    assert features.wav.shape == (features.num_frames * audio.SAMPLES_PER_FRAME,)  # tail dropped


def test_b_through_a_wav_file(load_case: Any, tmp_path: Path) -> None:
    """The same clip as a 16-bit WAV file: decoding gives int16 / 32768 exactly, so the windows match too."""
    case = load_case("b_audio_features")
    pcm = case.tensors["wav_int16"].numpy()
    path = tmp_path / "voice.wav"
    soundfile.write(path, pcm, audio.SAMPLE_RATE, subtype="PCM_16")
    wav = audio.load_audio(path)
    assert wav.dtype == np.float32 and np.array_equal(wav, pcm.astype(np.float32) / 32768)
    features = audio.load_audio_features(path)
    print(case.check({"indiv_mels": torch.from_numpy(features.indiv_mels)}, names=["indiv_mels"]))


def test_audio_constants_are_upstream(constants: dict[str, Any]) -> None:
    mel, video = constants["mel"], constants["video"]
    assert (audio.SAMPLE_RATE, audio.FPS, audio.SAMPLES_PER_FRAME) == (
        video["audio_sample_rate"], video["fps"], video["samples_per_video_frame"]
    )
    assert (audio.N_FFT, audio.HOP_LENGTH, audio.WIN_LENGTH, audio.NUM_MELS) == (
        mel["n_fft"], mel["hop_length"], mel["win_length"], mel["num_mels"]
    )
    assert (audio.FMIN, audio.FMAX, audio.PREEMPHASIS) == (mel["fmin"], mel["fmax"], mel["preemphasis"])
    assert (audio.MIN_LEVEL_DB, audio.REF_LEVEL_DB) == (mel["min_level_db"], mel["ref_level_db"])
    assert (audio.MEL_FRAMES_PER_SECOND, audio.MEL_WINDOW) == (
        mel["mel_frames_per_second"], mel["syncnet_mel_step_size"]
    )


def test_window_rule_edges() -> None:
    """Truncation toward zero (not floor) and clamping at both ends of the clip."""
    assert list(audio.mel_window_starts(4)) == [-6, -3, 0, 3]
    mel = np.arange(10, dtype=np.float64)[:, None] * np.ones((1, audio.NUM_MELS))  # 10 mel frames
    windows = audio.mel_windows(mel, 4)
    assert windows.shape == (4, audio.NUM_MELS, audio.MEL_WINDOW) and windows.dtype == np.float32
    assert list(windows[0, 0]) == [0] * 7 + list(range(1, 10))  # -6..9 clamped below
    assert list(windows[3, 0]) == list(range(3, 10)) + [9] * 9  # 3..18 clamped above


@pytest.mark.parametrize(
    ("name", "rate", "channels", "fmt"),
    [("voice.flac", 16000, 2, "FLAC"), ("voice.ogg", 44100, 1, "OGG"), ("voice.mp3", 22050, 1, "MP3")],
)
def test_common_formats_decode_to_16k_mono(tmp_path: Path, name: str, rate: int, channels: int, fmt: str) -> None:
    samples = _tone(1.0, rate, channels)
    path = tmp_path / name
    soundfile.write(path, samples, rate, format=fmt)
    wav = audio.load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - audio.SAMPLE_RATE) <= 1200  # lossy codecs add or drop a few ms
    if fmt == "FLAC":  # lossless at 16 kHz: exactly the channel mean of the 16-bit samples
        quantised = np.round(samples * 32767).clip(-32768, 32767) / 32768
        assert np.allclose(wav, quantised.mean(axis=1), atol=2 / 32768)
    assert 0.2 < float(np.max(np.abs(wav))) < 0.45


def test_audio_track_of_a_video_file_decodes_through_bundled_ffmpeg(tmp_path: Path) -> None:
    """AAC in an MP4 container (what .m4a files hold) is not readable by libsndfile: imageio-ffmpeg decodes it."""
    import imageio_ffmpeg

    voice = tmp_path / "voice16.wav"
    soundfile.write(voice, _tone(1.0, 44100, 2), 44100, subtype="PCM_16")
    video = tmp_path / "clip.mp4"
    writer = imageio_ffmpeg.write_frames(str(video), (16, 16), fps=25, audio_path=str(voice), audio_codec="aac")
    writer.send(None)
    for _ in range(25):
        writer.send(np.zeros((16, 16, 3), np.uint8).tobytes())
    writer.close()
    wav = audio.load_audio(video)
    assert wav.dtype == np.float32 and abs(len(wav) - audio.SAMPLE_RATE) <= 1600
    assert audio.load_audio_features(video).indiv_mels.shape[1:] == (audio.NUM_MELS, audio.MEL_WINDOW)


# ----------------------------------------------------------------------------------------------------------
# Bad input: each gives an AudioInputError (a ValueError) with a message that says what is wrong
# ----------------------------------------------------------------------------------------------------------


def test_text_file_named_wav_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    path.write_text("this is a transcript, not a recording\n")
    with pytest.raises(audio.AudioInputError, match=r"speech\.wav is not an audio file we can read"):
        audio.load_audio(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(audio.AudioInputError, match="audio file not found"):
        audio.load_audio(tmp_path / "nowhere.wav")


def test_all_zero_wav_is_silent(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(audio.SAMPLE_RATE, np.int16), audio.SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(audio.AudioInputError, match=r"silence\.wav is silent"):
        audio.load_audio(path)


def test_hiss_below_threshold_is_almost_silent(tmp_path: Path) -> None:
    path = tmp_path / "hiss.wav"
    noise = np.random.default_rng(0).integers(-3, 4, audio.SAMPLE_RATE).astype(np.int16)  # about -80 dBFS
    soundfile.write(path, noise, audio.SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(audio.AudioInputError, match=r"hiss\.wav is almost silent \(peak -\d+ dBFS"):
        audio.load_audio(path)
    assert len(audio.load_audio(path, silence_dbfs=-100)) == audio.SAMPLE_RATE  # the threshold is a setting


def test_ten_millisecond_wav_is_too_short(tmp_path: Path) -> None:
    path = tmp_path / "blip.wav"
    soundfile.write(path, _tone(0.01), audio.SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(audio.AudioInputError, match=r"blip\.wav is too short \(10 ms\): at least 40 ms"):
        audio.load_audio(path)


def test_over_the_length_limit(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    soundfile.write(path, _tone(2.5), audio.SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(audio.AudioInputError, match=r"speech\.wav is too long \(2\.5 s\): the limit is 2 s"):
        audio.load_audio(path, max_seconds=2)
    assert len(audio.load_audio(path, max_seconds=3)) == int(2.5 * audio.SAMPLE_RATE)
    assert len(audio.load_audio(path, max_seconds=None)) == int(2.5 * audio.SAMPLE_RATE)


def test_over_the_limit_through_ffmpeg(tmp_path: Path) -> None:
    """A format only ffmpeg reads is cut at the limit while decoding, then refused."""
    import imageio_ffmpeg

    voice = tmp_path / "voice16.wav"
    soundfile.write(voice, _tone(2.0), audio.SAMPLE_RATE, subtype="PCM_16")
    video = tmp_path / "long.mp4"
    writer = imageio_ffmpeg.write_frames(str(video), (16, 16), fps=25, audio_path=str(voice), audio_codec="aac")
    writer.send(None)
    for _ in range(50):
        writer.send(np.zeros((16, 16, 3), np.uint8).tobytes())
    writer.close()
    with pytest.raises(audio.AudioInputError, match=r"long\.mp4 is too long.*the limit is 0\.5 s"):
        audio.load_audio(video, max_seconds=0.5)


def test_waveform_checks_without_a_file() -> None:
    with pytest.raises(audio.AudioInputError, match="invalid samples"):
        audio.check_waveform(np.full(1000, np.nan, np.float32))
    with pytest.raises(audio.AudioInputError, match="too short"):
        audio.audio_features(np.ones(639, np.float32))
    assert audio.audio_features(np.ones(640, np.float32)).num_frames == 1


def test_idle_features() -> None:
    idle = audio.idle_features(2.0)
    assert idle.num_frames == 50 and idle.indiv_mels.shape == (50, 80, 16) and not idle.indiv_mels.any()
