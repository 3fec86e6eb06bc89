"""Real bad inputs, built in code (no binary blobs in git): broken and hostile images, prompts, numbers, names,
audio, a photo without a face and hostile model files.

Each input is what a user or a client really sends when something went wrong (a download cut short, a file
renamed to the wrong type, a phone's 16-bit PNG, a copy-pasted prompt gone wild) or what an attacker crafts (a
decompression bomb, a pickle that runs code, a regex-busting prompt). Every case carries the words its error
message must contain, so a test fails both on a crash and on a vague message.

`build(folder)` writes the file-based inputs under `folder` (the UI handlers take file paths, the model loader
takes files in models/) and returns them all; building takes about two seconds, most of it the two-hour
recording.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin

from tests.fixtures.talking_head_inputs import wav_bytes as wav

# What the messages must say, per kind of problem. Alternatives cover the wording of each route (the API's
# image decoder, Extras, the SadTalker photo decoder) while still naming the problem.
NOT_AN_IMAGE = r"not an image|could not be read as an? (picture|image)"
CORRUPT_IMAGE = r"truncated|corrupt|broken|not an image|could not be read as an? (picture|image)|could not be decoded"
TOO_LARGE_IMAGE = r"too large|pixel|limit|resize it first"
EMPTY = r"empty|no pixels|send the image|not an image|could not be read as an image"


@dataclass(frozen=True)
class FileCase:
    """A file someone uploads. `accepted` marks unusual but valid input that must simply work."""

    id: str
    data: bytes
    problem: str  # regex (case-insensitive) the refusal must match; unused when accepted
    filename: str = "input.png"
    accepted: bool = False


@dataclass(frozen=True)
class FieldCase:
    """Request fields that are wrong (A1111 names), and what the refusal must say; `accepted` marks hostile input
    that is valid all the same and must simply work, quickly."""

    id: str
    fields: dict[str, Any]
    problem: str
    accepted: bool = False

    def body(self, base: dict[str, Any]) -> dict[str, Any]:
        """`base` with the case's fields; an `infotext` case drops the prompt, which would win over it."""
        body = {**base, **self.fields}
        if "infotext" in self.fields:
            body.pop("prompt", None)
        return body


@dataclass(frozen=True)
class BodyCase:
    """A raw request body (JSON a client library would never produce, or not JSON at all)."""

    id: str
    body: bytes
    problem: str
    content_type: str = "application/json"


@dataclass(frozen=True)
class ModelCase:
    """A file in models/Stable-diffusion that must not load, with the words its refusal must contain."""

    id: str
    filename: str
    problem: str


@dataclass
class Corpus:
    folder: Path
    images: list[FileCase] = field(default_factory=list)
    prompts: list[FieldCase] = field(default_factory=list)
    prompt_bodies: list[BodyCase] = field(default_factory=list)
    numbers: list[FieldCase] = field(default_factory=list)
    names: list[FieldCase] = field(default_factory=list)
    bodies: list[BodyCase] = field(default_factory=list)
    audio: list[FileCase] = field(default_factory=list)
    no_face: FileCase | None = None
    models: list[ModelCase] = field(default_factory=list)
    pickle_marker: Path | None = None

    def path(self, case: FileCase) -> Path:
        """Where `case` was written (the UI handlers take uploads as file paths)."""
        return self.folder / "files" / f"{case.id}-{case.filename}"

    def count(self) -> int:
        """How many distinct bad inputs the corpus holds (valid-but-unusual images included)."""
        groups = (self.images, self.prompts, self.prompt_bodies, self.numbers, self.names, self.bodies,
                  self.audio, self.models)
        return sum(len(g) for g in groups) + (self.no_face is not None)


def build(folder: Path, checkpoints: Path | None = None) -> Corpus:
    """Every bad input; the hostile model files go into `checkpoints` (a models/Stable-diffusion) when given."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(folder, images=image_cases(), prompts=prompt_cases(), prompt_bodies=prompt_body_cases(),
                    numbers=number_cases(), names=name_cases(), bodies=body_cases(), audio=audio_cases(),
                    no_face=FileCase("landscape-no-face", png(landscape()), r"no face", "landscape.png"))
    files = folder / "files"
    files.mkdir(exist_ok=True)
    for case in [*corpus.images, *corpus.audio, corpus.no_face]:
        corpus.path(case).write_bytes(case.data)
    corpus.pickle_marker = folder / "PICKLE-RAN-CODE"
    if checkpoints is not None:
        corpus.models = write_models(checkpoints, corpus.pickle_marker)
    return corpus


# -- images ------------------------------------------------------------------------------------------------------


def png(image: Image.Image, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def photo(width: int = 64, height: int = 48) -> Image.Image:
    """A small picture with structure (a gradient and a shape), so decoders really have work to do."""
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (height, 1)), np.full((height, width), 120, np.uint8),
                       np.tile(ramp[::-1], (height, 1))], axis=2)
    image = Image.fromarray(pixels)
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=(200, 40, 40))
    return image


def landscape(width: int = 160, height: int = 120) -> Image.Image:
    """Sky, hills and a sun: a real-looking photo with no face in it."""
    image = Image.new("RGB", (width, height), (120, 170, 230))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width - 40, 10, width - 15, 35), fill=(250, 220, 90))
    draw.polygon([(0, height), (0, height * 2 // 3), (width // 3, height // 2), (width * 2 // 3, height * 2 // 3),
                  (width, height // 2), (width, height)], fill=(60, 120, 50))
    return image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_from_rows(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes,
                  extra_chunks: bytes = b"") -> bytes:
    """A PNG written by hand, so its header can say what a real encoder would never write."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra_chunks
            + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b""))


def bilevel_png(side: int) -> bytes:
    """A real, complete side x side black 1-bit PNG: each row is the filter byte and side/8 zero bytes, which zlib
    squeezes a thousandfold (20000 x 20000 is 50 MB of pixels in about 50 KB)."""
    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def ztxt_bomb() -> bytes:
    """A small PNG whose compressed text chunk inflates to 64 MB: the classic metadata decompression bomb."""
    text = zlib.compress(b"A" * (64 * 1024 * 1024), 9)
    chunk = _chunk(b"zTXt", b"parameters\x00\x00" + text)
    base = png(photo(8, 8))
    return base[:33] + chunk + base[33:]  # right after IHDR (8-byte signature + 25-byte IHDR chunk)


def long_infotext_png() -> bytes:
    """A PNG whose `parameters` text is 100 KB of words without a single colon: parsing it with a naive
    backtracking regex takes minutes of CPU per request."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "masterpiece AND best quality " * 3600)
    return png(photo(8, 8), pnginfo=info)


def image_cases() -> list[FileCase]:
    good = png(photo())
    jpeg = io.BytesIO()
    photo().save(jpeg, format="JPEG", quality=90)
    jpeg_bytes = jpeg.getvalue()
    webp = io.BytesIO()
    photo().save(webp, format="WEBP")
    cmyk = io.BytesIO()
    photo().convert("CMYK").save(cmyk, format="JPEG")
    sixteen = Image.fromarray((np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16))
    palette = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    gif = io.BytesIO()
    frames = [photo(), photo().rotate(90)]
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    # A real 2-colour 20000 x 20000 PNG: opening it needs the header only, decoding would take 400 MB of RAM.
    huge = bilevel_png(20000)
    # Bad CRC and garbage in the pixel stream: the file a flaky disk or a broken transfer leaves behind.
    corrupt = bytearray(good)
    idat = good.index(b"IDAT")
    corrupt[idat + 10: idat + 40] = b"\xde\xad\xbe\xef" * 7 + b"\x00\x00"
    return [
        FileCase("png-truncated", good[: len(good) // 2], CORRUPT_IMAGE),
        FileCase("jpeg-truncated", jpeg_bytes[: len(jpeg_bytes) // 3], CORRUPT_IMAGE, "photo.jpg"),
        FileCase("webp-truncated", webp.getvalue()[:60], CORRUPT_IMAGE, "photo.webp"),
        FileCase("png-corrupt-idat", bytes(corrupt), CORRUPT_IMAGE),
        FileCase("zero-bytes", b"", EMPTY),
        FileCase("text-named-png", b"<html><body>403 Forbidden</body></html>\n", NOT_AN_IMAGE),
        FileCase("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', NOT_AN_IMAGE,
                 "vector.svg"),
        FileCase("png-header-only", good[:33], CORRUPT_IMAGE),
        FileCase("png-20000x20000", huge, TOO_LARGE_IMAGE),
        FileCase("png-header-claims-100000x100000",
                 png_from_rows(100000, 100000, 8, 2, b"\x00" * 301), TOO_LARGE_IMAGE),
        FileCase("png-ztxt-bomb", ztxt_bomb(), r"too large|decompress|not an image|could not be read"),
        FileCase("png-100kb-infotext", long_infotext_png(), "", accepted=True),
        FileCase("png-1x1", png(Image.new("RGB", (1, 1), (255, 0, 0))), "", accepted=True),
        FileCase("jpeg-cmyk", cmyk.getvalue(), "", "cmyk.jpg", accepted=True),
        FileCase("png-16-bit", png(sixteen), "", accepted=True),
        FileCase("png-palette-alpha", png(palette), "", accepted=True),
        FileCase("gif-animated", gif.getvalue(), "", "anim.gif", accepted=True),
    ]


# -- prompts, numbers, names -------------------------------------------------------------------------------------


def prompt_cases() -> list[FieldCase]:
    return [
        FieldCase("prompt-nul-byte", {"prompt": "a red fox\x00 in snow"}, r"NUL"),
        FieldCase("negative-nul-byte", {"negative_prompt": "\x00blurry"}, r"NUL"),
        FieldCase("prompt-100kb", {"prompt": "a red fox in the snow, " * 4500}, r"prompt.*(long|at most|characters)"),
        # 100 KB of unclosed emphasis brackets: a naive parser spends a minute of CPU per request on it.
        FieldCase("prompt-100kb-brackets", {"prompt": "[[[[:::" * 14700}, r"prompt.*(long|at most|characters)"),
        FieldCase("prompt-unclosed-brackets-under-the-cap", {"prompt": "[[[[:::" * 2900}, r"more than 64.*brackets"),
        FieldCase("infotext-100kb-without-a-colon", {"infotext": "masterpiece AND best quality " * 3600},
                  r"prompt.*(long|at most|characters)"),
        FieldCase("prompt-30kb-of-blanks", {"prompt": "a fox" + " " * 30000 + "BREAK snow"}, "", accepted=True),
        FieldCase("prompt-lora-tags-never-closed", {"prompt": "<lora:" * 5000}, "", accepted=True),
        FieldCase("prompt-lone-surrogate", {"prompt": "a fox \ud800 in snow"}, r"prompt.*(UTF-8|surrogate|unicode)"),
        FieldCase("prompt-bad-emphasis-weight", {"prompt": "a (fox:1.2.3) in snow"}, r"1\.2\.3.*weight"),
        FieldCase("prompt-lora-nan", {"prompt": "a fox <lora:fox:nan>"}, r"lora:fox:nan"),
    ]


def prompt_body_cases() -> list[BodyCase]:
    """Prompts that cannot even be carried by valid JSON: bytes that are not UTF-8."""
    return [
        BodyCase("prompt-latin1-bytes", b'{"prompt": "caf\xe9 au lait, cr\xe8me", "steps": 3}',
                 r"not valid UTF-8.*0xe9"),
        BodyCase("prompt-invalid-utf8-sequence", b'{"prompt": "a fox \xc3\x28 in snow"}', r"not valid UTF-8"),
        BodyCase("prompt-overlong-utf8-slash", b'{"prompt": "..\xc0\xaf..\xc0\xafetc"}', r"not valid UTF-8"),
    ]


def number_cases() -> list[FieldCase]:
    nan, inf = math.nan, math.inf
    return [
        FieldCase("cfg-nan", {"cfg_scale": nan}, r"cfg_scale"),
        FieldCase("denoising-nan", {"denoising_strength": nan}, r"denoising_strength"),
        FieldCase("steps-negative", {"steps": -20}, r"steps"),
        FieldCase("steps-infinite", {"steps": inf}, r"steps"),
        FieldCase("width-huge", {"width": 10**12}, r"width"),
        FieldCase("height-negative", {"height": -512}, r"height"),
        FieldCase("seed-2-to-the-70", {"seed": 2**70}, r"seed"),
        FieldCase("batch-size-zero", {"batch_size": 0}, r"batch_size"),
        FieldCase("n-iter-billion", {"n_iter": 10**9}, r"n_iter"),
        FieldCase("subseed-strength-inf", {"subseed_strength": -inf}, r"subseed_strength"),
        FieldCase("eta-nan", {"eta": nan}, r"eta"),
        FieldCase("hires-scale-nan", {"enable_hr": True, "hr_scale": nan}, r"hr_scale"),
        FieldCase("width-not-multiple-of-8", {"width": 100}, r"width.*multiple of 8"),
    ]


def name_cases() -> list[FieldCase]:
    return [
        FieldCase("sampler-unknown", {"sampler_name": "Euler Z++ Turbo"}, r"sampler.*Euler Z\+\+ Turbo"),
        FieldCase("scheduler-unknown", {"scheduler": "Wobbly"}, r"Wobbly"),
        FieldCase("checkpoint-unknown", {"override_settings": {"sd_model_checkpoint": "no-such-model.safetensors"}},
                  r"no-such-model"),
        FieldCase("vae-unknown", {"override_settings": {"sd_vae": "ghost.vae.pt"}}, r"ghost"),
        FieldCase("hires-upscaler-unknown", {"enable_hr": True, "hr_upscaler": "Mega-Upscaler 9000"},
                  r"Mega-Upscaler 9000"),
        FieldCase("style-unknown", {"styles": ["Nonexistent style"]}, r"Nonexistent style"),
        FieldCase("script-unknown", {"alwayson_scripts": {"No Such Script": {"args": []}}}, r"No Such Script"),
    ]


def body_cases() -> list[BodyCase]:
    return [
        BodyCase("json-truncated", b'{"prompt": "a fox", "steps": 3', r"not valid JSON"),
        BodyCase("json-is-a-list", b'["a fox", 3]', r"body.*(dictionary|object)"),
        BodyCase("json-nested-100000", b'{"prompt": ' + b"[" * 100000 + b"]" * 100000 + b"}",
                 r"nested too deeply"),
        BodyCase("form-not-json", b"prompt=a+fox&steps=3", r"body.*(dictionary|object)",
                 "application/x-www-form-urlencoded"),
    ]


# -- audio -------------------------------------------------------------------------------------------------------

AUDIO_RATE = 16000


def tone(seconds: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """A voice-like 140 Hz buzz with a syllable rhythm, float32 in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * math.pi * 140 * t) * (0.4 + 0.6 * np.abs(np.sin(2 * math.pi * 2 * t)))).astype(
        np.float32)


def wav_declaring(seconds: float, data: bytes, rate: int = AUDIO_RATE) -> bytes:
    """A 16-bit mono WAV whose header announces `seconds` of audio but which holds only `data`: a two-hour
    recording whose upload or copy stopped early."""
    declared = int(seconds * rate) * 2
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + declared) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", declared) + data)


def two_hour_adpcm_wav() -> bytes:
    """A complete, valid two-hour voice recording as a dictaphone writes it (8 kHz mono IMA ADPCM WAV, about
    29 MB), streamed through the encoder ten seconds at a time."""
    import soundfile

    buffer = io.BytesIO()
    chunk = tone(10.0, 8000)
    with soundfile.SoundFile(buffer, "w", samplerate=8000, channels=1, format="WAV", subtype="IMA_ADPCM") as out:
        for _ in range(720):
            out.write(chunk)
    return buffer.getvalue()


def float_wav_with_nan() -> bytes:
    import soundfile

    samples = tone(0.5)
    samples[100:200] = np.nan
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, AUDIO_RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def audio_cases() -> list[FileCase]:
    voice = wav(tone(0.3))
    return [
        FileCase("audio-is-text", b"Hello! This transcript is not a recording.\n" * 20, r"not an audio file",
                 "speech.wav"),
        FileCase("audio-is-png", png(photo()), r"not an audio file", "voice.mp3"),
        FileCase("audio-zero-bytes", b"", r"audio.*empty", "voice.wav"),
        FileCase("audio-silence", wav(np.zeros(AUDIO_RATE, np.float32)), r"silent", "silence.wav"),
        FileCase("audio-near-silence", wav(tone(0.5) * 1e-3), r"almost silent", "hiss.wav"),
        FileCase("audio-10-ms", wav(tone(0.01)), r"too short", "blip.wav"),
        FileCase("audio-nan-samples", float_wav_with_nan(), r"invalid samples|NaN", "float.wav"),
        FileCase("audio-wav-truncated", voice[: len(voice) // 2 + 1], r"truncated", "cut.wav"),
        FileCase("audio-2h-header-1s-data", wav_declaring(7200, wav(tone(1.0))[44:]), r"truncated.*7200",
                 "meeting.wav"),
        FileCase("audio-2h-adpcm", two_hour_adpcm_wav(), r"too long.*7200", "dictaphone.wav"),
    ]


# -- model files -------------------------------------------------------------------------------------------------


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors layout written by hand (8-byte header length, JSON header, raw data)."""
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset, blobs = 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


class _RunsCode:
    """Unpickling this calls `Path.touch(marker)`: what a malicious checkpoint does, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Path.touch, (self.marker,)


def evil_ckpt_zip(marker: Path) -> bytes:
    """A torch zip-format checkpoint (what `torch.save` writes) whose data.pkl runs code when unpickled."""
    payload = {"state_dict": {"model.diffusion_model.x": _RunsCode(marker)}}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    return buffer.getvalue()


def write_models(folder: Path, marker: Path) -> list[ModelCase]:
    """Write the hostile and broken checkpoints into `folder` (models/Stable-diffusion) and describe them."""
    folder.mkdir(parents=True, exist_ok=True)
    w = np.zeros((4, 4), np.float32)
    unet_key = "model.diffusion_model.input_blocks.0.0.weight"
    valid = safetensors_bytes({unet_key: np.ones((8, 4, 3, 3), np.float32)})
    files = {
        "bad-header-length.safetensors": struct.pack("<Q", 2**40) + b'{"a": 1}' + b"\x00" * 64,
        "bad-header-json.safetensors": struct.pack("<Q", 24) + b'{"x": {"dtype": "F32", ' + b"\x00" * 32,
        "truncated.safetensors": valid[: len(valid) - 100],
        "empty.safetensors": b"",
        "evil-pickle.ckpt": evil_ckpt_zip(marker),
        "evil-raw-pickle.ckpt": pickle.dumps({"state_dict": _RunsCode(marker)}, protocol=2),
        "flux-like.safetensors": safetensors_bytes({"double_blocks.0.img_attn.qkv.weight": w,
                                                    "single_blocks.0.linear1.weight": w}),
        "lora-in-wrong-folder.safetensors": safetensors_bytes({"lora_unet_down_blocks_0.lora_down.weight": w,
                                                              "lora_unet_down_blocks_0.lora_up.weight": w}),
        "unet-only.safetensors": valid,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    corrupt = r"corrupt|truncated|re-download"
    return [
        ModelCase("safetensors-header-length-2^40", "bad-header-length.safetensors", corrupt),
        ModelCase("safetensors-header-bad-json", "bad-header-json.safetensors", corrupt),
        ModelCase("safetensors-truncated", "truncated.safetensors", corrupt),
        ModelCase("safetensors-0-bytes", "empty.safetensors", r"corrupt|truncated|empty"),
        ModelCase("ckpt-pickle-runs-code-zip", "evil-pickle.ckpt", r"pickled code|not just weights"),
        ModelCase("ckpt-pickle-runs-code-raw", "evil-raw-pickle.ckpt", r"pickled code|not just weights"),
        ModelCase("safetensors-other-architecture", "flux-like.safetensors", r"Flux.*not supported"),
        ModelCase("safetensors-lora-as-checkpoint", "lora-in-wrong-folder.safetensors", r"LoRA.*models/Lora"),
        ModelCase("safetensors-unet-only", "unet-only.safetensors", r"no text encoder|not supported|does not fit"),
    ]
