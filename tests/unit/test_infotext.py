"""Infotext build/parse (A1111 format), image embedding round trips, NovelAI conversion, request fields."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from modules.engine.image_metadata import (
    build_exif,
    decode_user_comment,
    encode_image,
    encode_user_comment,
    read_image_info,
)
from modules.engine.infotext import (
    build_infotext,
    format_value,
    infotext_to_request_fields,
    order_params,
    parse_infotext,
    parse_novelai,
    quote,
    split_legacy_sampler,
)

# --- Round trip ----------------------------------------------------------------------------------------------

ROUND_TRIP_PARAMS: dict[str, Any] = {
    "Version": "v1.10.1",
    "Seed": 1234567890,
    "Steps": 20,
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": 7.5,
    "Size": "512x768",
    "Model hash": "6ce0161689",
    "Model": "v1-5-pruned-emaonly",
    "Denoising strength": 0.7,
    "Clip skip": 2,
    "Hires upscale": 2.0,
    "Hires upscaler": "R-ESRGAN 4x+",
    "Lora hashes": "add_detail: 7c6bad76eb54, more_art: 1a2b3c4d5e6f",
    "Hires prompt": 'line one, "quoted"\nline two: colon',
    "Emphasis": "No norm",
    "Unused": None,
}

ROUND_TRIP_EXPECTED: dict[str, Any] = {
    "Steps": "20",
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": "7.5",
    "Seed": "1234567890",
    "Size-1": "512",
    "Size-2": "768",
    "Model hash": "6ce0161689",
    "Model": "v1-5-pruned-emaonly",
    "Denoising strength": "0.7",
    "Clip skip": "2",
    "Hires upscale": "2",
    "Hires upscaler": "R-ESRGAN 4x+",
    "Lora hashes": "add_detail: 7c6bad76eb54, more_art: 1a2b3c4d5e6f",
    "Hires prompt": 'line one, "quoted"\nline two: colon',
    "Emphasis": "No norm",
    "Version": "v1.10.1",
}

PROMPTS = [
    ("a cat, sitting on a mat", "blurry, lowres"),
    ("(masterpiece:1.2), best quality, <lora:add_detail:0.5>", "(worst quality:1.4), text: watermark"),
    ('a sign that says "hello, world"', 'no "quotes", please'),
    ("猫, 可愛い, café crème 🐱", "ぼやけた, 低品質"),
    ("a prompt with no negative", ""),
    ("first line\nsecond line, with comma\nthird: with colon", "neg line one\nneg line two, more"),
    ("prompt\n\nafter a blank line", "neg"),
]


@pytest.mark.parametrize(("prompt", "negative"), PROMPTS)
def test_build_then_parse_gives_back_everything(prompt: str, negative: str) -> None:
    text = build_infotext(prompt, negative, ROUND_TRIP_PARAMS)
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == prompt
    assert parsed["Negative prompt"] == negative
    for key, value in ROUND_TRIP_EXPECTED.items():
        assert parsed[key] == value, key
    assert "Unused" not in parsed


def test_build_matches_a1111_layout() -> None:
    text = build_infotext(
        "a photo",
        "ugly",
        {"Seed": 42, "Steps": 20, "CFG scale": 7.0, "Sampler": "DPM++ 2M", "Schedule type": "Karras",
         "Size": "512x512", "Version": "v1.10.1", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly"},
    )
    assert text == (
        "a photo\nNegative prompt: ugly\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
    )


def test_empty_negative_prompt_line_is_left_out() -> None:
    text = build_infotext("p", "", {"Steps": 20, "Sampler": "Euler a", "Seed": 1})
    assert text == "p\nSteps: 20, Sampler: Euler a, Seed: 1"


def test_order_puts_canonical_first_extras_in_order_then_version() -> None:
    ordered = order_params({"Version": "v", "Zeta": 1, "Seed": 2, "Alpha": 3, "Steps": 4, "User": "me"})
    assert list(ordered) == ["Steps", "Seed", "Zeta", "Alpha", "Version", "User"]


def test_quote_and_format_like_a1111() -> None:
    assert quote("plain value") == "plain value"
    assert quote("a, b") == '"a, b"'
    assert quote("k: v") == '"k: v"'
    assert quote("é\nü") == '"é\\nü"'  # ensure_ascii=False keeps non-ASCII as is
    assert format_value(7.0) == "7"
    assert format_value(7.5) == "7.5"
    assert format_value(0.35) == "0.35"
    assert format_value(True) == "True"
    assert format_value(20) == "20"


def test_value_equal_to_its_key_is_written_bare() -> None:
    text = build_infotext("p", "", {"Steps": 20, "Sampler": "Euler", "Seed": 1, "Tiled Diffusion": "Tiled Diffusion"})
    assert text.endswith("Seed: 1, Tiled Diffusion")


# --- Real A1111 infotexts -------------------------------------------------------------------------------------

A1111_HIRES = (
    "masterpiece, best quality, 1girl, solo, (looking at viewer:1.2), <lora:add_detail:0.5>\n"
    "Negative prompt: (worst quality, low quality:1.4), easynegative\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 2, "
    "Hires upscale: 2, Hires steps: 15, Hires upscaler: R-ESRGAN 4x+ Anime6B, "
    'Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative: c74b4e810b03", Version: v1.10.1'
)

A1111_LEGACY_SAMPLER = (
    "a photograph of an astronaut riding a horse on mars\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.6.0"
)

A1111_PROMPT_ONLY = "portrait of a knight in armor\nstyle: oil painting, mood: dramatic"

A1111_INPAINT = (
    "a red sports car, studio lighting, 8k\n"
    "Negative prompt: blurry\n"
    "Steps: 30, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 3141592653, Size: 768x512, "
    "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Denoising strength: 0.6, Mask blur: 4, "
    "Inpaint area: Only masked, Masked area padding: 48, Masked content: latent noise, Version: v1.9.4"
)

A1111_VARIATION_MULTILINE = (
    "cinematic photo of a lighthouse\n"
    "at dusk, volumetric light\n"
    "Negative prompt: lowres, bad anatomy\n"
    "text, watermark\n"
    "Steps: 25, Sampler: Euler a, CFG scale: 6.5, Seed: 1000, Size: 640x448, Model hash: 31e35c80fc, "
    "Model: sd_xl_base_1.0, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, Variation seed: 2000, "
    "Variation seed strength: 0.3, Seed resize from: 512x512, Denoising strength: 0.55, ENSD: 31337, RNG: CPU, "
    'Hires prompt: "cinematic photo, lighthouse\\ndetailed", Hires upscale: 1.5, Hires upscaler: Latent, '
    "Hires sampler: DPM++ SDE Karras, Version: v1.7.0"
)

A1111_OLD_FIRST_PASS = (
    "a castle on a hill\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 1024x768, Denoising strength: 0.7, "
    "First pass size: 0x0"
)


def test_parse_hires_infotext() -> None:
    p = parse_infotext(A1111_HIRES)
    assert p["Prompt"] == "masterpiece, best quality, 1girl, solo, (looking at viewer:1.2), <lora:add_detail:0.5>"
    assert p["Negative prompt"] == "(worst quality, low quality:1.4), easynegative"
    assert p["Steps"] == "28"
    assert (p["Sampler"], p["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert (p["Size-1"], p["Size-2"]) == ("512", "768")
    assert p["Clip skip"] == "2"
    assert p["Hires upscaler"] == "R-ESRGAN 4x+ Anime6B"
    assert p["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert p["TI hashes"] == "easynegative: c74b4e810b03"
    assert p["Version"] == "v1.10.1"
    assert p["RNG"] == "GPU"


def test_parse_legacy_sampler_name_is_split() -> None:
    p = parse_infotext(A1111_LEGACY_SAMPLER)
    assert p["Sampler"] == "DPM++ 2M"
    assert p["Schedule type"] == "Karras"
    assert p["Negative prompt"] == ""
    assert p["Clip skip"] == "1"
    assert p["CFG scale"] == "7.5"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("DPM++ 2M Karras", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M SDE Exponential", ("DPM++ 2M SDE", "Exponential")),
        ("DPM++ 2M SDE Heun Karras", ("DPM++ 2M SDE Heun", "Karras")),
        ("DPM2 a Karras", ("DPM2 a", "Karras")),
        ("Euler SGM Uniform", ("Euler", "SGM Uniform")),
        ("Euler SGMUniform", ("Euler", "SGM Uniform")),
        ("Euler a", ("Euler a", None)),
        ("DDIM", ("DDIM", None)),
        ("My Custom Karras", ("My Custom Karras", None)),
    ],
)
def test_split_legacy_sampler(name: str, expected: tuple[str, str | None]) -> None:
    assert split_legacy_sampler(name) == expected


def test_fewer_than_three_pairs_means_it_is_all_prompt() -> None:
    p = parse_infotext(A1111_PROMPT_ONLY)
    assert p["Prompt"] == A1111_PROMPT_ONLY
    assert p["Negative prompt"] == ""
    assert "style" not in p
    assert p["Clip skip"] == "1"
    assert p["Schedule type"] == "Automatic"


def test_parse_inpaint_infotext() -> None:
    p = parse_infotext(A1111_INPAINT)
    assert p["Inpaint area"] == "Only masked"
    assert p["Masked area padding"] == "48"
    assert p["Masked content"] == "latent noise"
    assert p["Mask mode"] == "Inpaint masked"  # default filled in
    assert p["Denoising strength"] == "0.6"


def test_parse_variation_seed_multiline_negative_and_quoted_hires_prompt() -> None:
    p = parse_infotext(A1111_VARIATION_MULTILINE)
    assert p["Prompt"] == "cinematic photo of a lighthouse\nat dusk, volumetric light"
    assert p["Negative prompt"] == "lowres, bad anatomy\ntext, watermark"
    assert (p["Seed resize from-1"], p["Seed resize from-2"]) == ("512", "512")
    assert p["Variation seed"] == "2000"
    assert p["RNG"] == "CPU"
    assert p["ENSD"] == "31337"
    assert p["VAE"] == "sdxl_vae.safetensors"
    assert p["Hires prompt"] == "cinematic photo, lighthouse\ndetailed"
    assert (p["Hires sampler"], p["Hires schedule type"]) == ("DPM++ SDE", "Karras")
    assert p["Schedule type"] == "Automatic"


def test_parse_old_first_pass_size() -> None:
    p = parse_infotext(A1111_OLD_FIRST_PASS)
    # 1024x768 scaled to about 512*512 pixels, rounded up to multiples of 64.
    assert (p["Size-1"], p["Size-2"]) == (640, 448)
    assert (p["Hires resize-1"], p["Hires resize-2"]) == (1024, 768)


def test_parse_defaults_and_crlf() -> None:
    p = parse_infotext("a dog\r\nNegative prompt: cat\r\nSteps: 10, Sampler: Euler, Seed: 5\r\n")
    assert p["Prompt"] == "a dog"
    assert p["Negative prompt"] == "cat"
    assert p["Seed"] == "5"
    assert p["Hires resize-1"] == 0
    assert p["Hires sampler"] == "Use same sampler"
    assert p["Masked area padding"] == 32
    assert p["VAE Encoder"] == "Full"


def test_parse_params_only_and_empty_values() -> None:
    p = parse_infotext("Steps: 10, Sampler: Euler, Seed: 5, Empty: , Model: x")
    assert p["Prompt"] == ""
    assert p["Model"] == "x"
    assert "Empty" not in p  # A1111 drops a key with an empty value


def test_parse_hypernet_is_added_to_prompt() -> None:
    p = parse_infotext("a tree\nSteps: 10, Sampler: Euler, Seed: 5, Hypernet: anime, Hypernet strength: 0.8")
    assert p["Prompt"] == "a tree<hypernet:anime:0.8>"


# --- Request fields -------------------------------------------------------------------------------------------


def test_request_fields_txt2img_types() -> None:
    f = infotext_to_request_fields(parse_infotext(A1111_HIRES))
    assert f["prompt"].startswith("masterpiece")
    assert f["negative_prompt"] == "(worst quality, low quality:1.4), easynegative"
    assert f["steps"] == 28 and isinstance(f["steps"], int)
    assert f["sampler_name"] == "DPM++ 2M"
    assert f["scheduler"] == "Karras"
    assert f["cfg_scale"] == 7.0 and isinstance(f["cfg_scale"], float)
    assert f["seed"] == 1234567890
    assert (f["width"], f["height"]) == (512, 768)
    assert f["denoising_strength"] == 0.45
    assert f["enable_hr"] is True
    assert f["hr_scale"] == 2.0 and isinstance(f["hr_scale"], float)
    assert f["hr_second_pass_steps"] == 15
    assert f["hr_upscaler"] == "R-ESRGAN 4x+ Anime6B"
    assert (f["hr_resize_x"], f["hr_resize_y"]) == (0, 0)
    assert f["hr_prompt"] == "" and f["hr_negative_prompt"] == ""
    assert "hr_sampler_name" not in f  # "Use same sampler" means: leave it out
    assert "hr_checkpoint_name" not in f
    assert f["override_settings"]["CLIP_stop_at_last_layers"] == 2
    assert f["override_settings"]["randn_source"] == "GPU"
    assert "mask_blur" not in f
    assert "sd_model_checkpoint" not in f["override_settings"]


def test_request_fields_variation_and_settings() -> None:
    f = infotext_to_request_fields(parse_infotext(A1111_VARIATION_MULTILINE))
    assert f["subseed"] == 2000
    assert f["subseed_strength"] == 0.3
    assert (f["seed_resize_from_w"], f["seed_resize_from_h"]) == (512, 512)
    assert f["hr_sampler_name"] == "DPM++ SDE"
    assert f["hr_scheduler"] == "Karras"
    assert f["override_settings"]["eta_noise_seed_delta"] == 31337
    assert f["override_settings"]["randn_source"] == "CPU"
    assert f["override_settings"]["sd_vae"] == "sdxl_vae.safetensors"
    assert f["override_settings"]["CLIP_stop_at_last_layers"] == 1


def test_request_fields_img2img() -> None:
    f = infotext_to_request_fields(parse_infotext(A1111_INPAINT), mode="img2img")
    assert f["mask_blur"] == 4
    assert f["inpaint_full_res"] is True
    assert f["inpaint_full_res_padding"] == 48
    assert f["inpainting_fill"] == 2
    assert f["inpainting_mask_invert"] == 0
    assert f["denoising_strength"] == 0.6
    assert "enable_hr" not in f and "hr_scale" not in f


def test_request_fields_no_hires_without_denoising() -> None:
    f = infotext_to_request_fields(parse_infotext(A1111_LEGACY_SAMPLER))
    assert f["enable_hr"] is False
    assert "denoising_strength" not in f


def test_request_fields_skip_unconvertible_values() -> None:
    f = infotext_to_request_fields(parse_infotext("p\nSteps: lots, Sampler: Euler, Seed: 5, CFG scale: high"))
    assert "steps" not in f and "cfg_scale" not in f
    assert f["seed"] == 5


# --- Embedding in image files ---------------------------------------------------------------------------------

EMBED_TEXT = build_infotext(
    'a "quoted" prompt, 猫 🐱\nsecond line', "neg, ünïcode", {**ROUND_TRIP_PARAMS, "Hires prompt": "x, y"}
)


def _reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "gif"])
def test_embed_then_read_round_trip(fmt: str) -> None:
    image = Image.new("RGB", (32, 24), (200, 30, 60))
    data = encode_image(image, fmt, EMBED_TEXT)  # type: ignore[arg-type]
    reopened = _reopen(data)
    assert reopened.format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}[fmt]
    info, _items = read_image_info(reopened)
    assert info == EMBED_TEXT
    assert parse_infotext(info)["Prompt"] == 'a "quoted" prompt, 猫 🐱\nsecond line'


def test_png_keeps_extra_text_items() -> None:
    text = "p\nSteps: 1, Sampler: Euler, Seed: 1"
    data = encode_image(Image.new("RGB", (8, 8)), "png", text, extra_text={"Foo": "bar"})
    info, items = read_image_info(_reopen(data))
    assert info == text
    assert items == {"Foo": "bar"}


def test_no_infotext_embeds_nothing() -> None:
    for fmt in ("png", "jpeg", "webp", "gif"):
        info, _ = read_image_info(_reopen(encode_image(Image.new("RGB", (8, 8)), fmt, None)))  # type: ignore[arg-type]
        assert info is None, fmt


def test_jpeg_with_alpha_becomes_rgb_and_webp_keeps_alpha() -> None:
    image = Image.new("RGBA", (8, 8), (10, 20, 30, 128))
    assert _reopen(encode_image(image, "jpeg", "x")).mode == "RGB"
    assert _reopen(encode_image(image, "webp", "x", lossless=True)).mode == "RGBA"
    assert _reopen(encode_image(Image.new("P", (8, 8)), "jpg", "x")).mode == "RGB"


def test_jpeg_rejects_an_infotext_too_long_for_exif() -> None:
    with pytest.raises(ValueError, match="too long"):
        encode_image(Image.new("RGB", (8, 8)), "jpeg", "x" * 40000)
    # WebP has no such limit.
    long_text = "p\n" + "y" * 40000
    assert read_image_info(_reopen(encode_image(Image.new("RGB", (8, 8)), "webp", long_text)))[0] == long_text


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        encode_image(Image.new("RGB", (8, 8)), "bmp", "x")  # type: ignore[arg-type]


def test_exif_layout_is_what_piexif_writes() -> None:
    """Big-endian TIFF, Exif IFD pointer, UserComment typed UNDEFINED (7) so piexif returns bytes to A1111."""
    exif = build_exif("hello")
    assert exif[:6] == b"Exif\x00\x00"
    tiff = exif[6:]
    assert tiff[:4] == b"MM\x00\x2a"
    (ifd0,) = struct.unpack(">I", tiff[4:8])
    tag, typ, count, exif_ifd = struct.unpack(">HHII", tiff[ifd0 + 2 : ifd0 + 14])
    assert (tag, typ, count) == (0x8769, 4, 1)
    tag, typ, count, offset = struct.unpack(">HHII", tiff[exif_ifd + 2 : exif_ifd + 14])
    assert (tag, typ) == (0x9286, 7)
    assert tiff[offset : offset + count] == b"UNICODE\x00" + "hello".encode("utf-16-be")


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (encode_user_comment("Steps: 20, é 猫"), "Steps: 20, é 猫"),
        (b"UNICODE\x00" + "Steps: 20, little endian".encode("utf-16-le"), "Steps: 20, little endian"),
        (b"UNICODE\x00" + "with bom".encode("utf-16"), "with bom"),
        (b"ASCII\x00\x00\x00plain ascii", "plain ascii"),
        (b"\x00" * 8 + b"undefined charset", "undefined charset"),
        (b"no prefix at all", "no prefix at all"),
        (b"UNICODE\x00" + "padded".encode("utf-16-be") + b"\x00\x00", "padded"),
    ],
)
def test_decode_user_comment_variants(raw: bytes, text: str) -> None:
    assert decode_user_comment(raw) == text


def test_read_little_endian_exif_written_by_other_tools() -> None:
    """A Windows-style EXIF: little-endian TIFF and UTF-16-LE comment text."""
    body = b"UNICODE\x00" + "a tree\nSteps: 5, Sampler: Euler, Seed: 9".encode("utf-16-le")
    tiff = b"II" + struct.pack("<HI", 42, 8)
    tiff += struct.pack("<H", 1) + struct.pack("<HHII", 0x8769, 4, 1, 26) + struct.pack("<I", 0)
    tiff += struct.pack("<H", 1) + struct.pack("<HHII", 0x9286, 7, len(body), 44) + struct.pack("<I", 0) + body
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="JPEG", exif=b"Exif\x00\x00" + tiff)
    info, _ = read_image_info(_reopen(out.getvalue()))
    assert info == "a tree\nSteps: 5, Sampler: Euler, Seed: 9"


def test_broken_exif_does_not_raise() -> None:
    image = Image.new("RGB", (8, 8))
    image.info["exif"] = b"Exif\x00\x00garbage"
    assert read_image_info(image) == (None, {})


# --- NovelAI --------------------------------------------------------------------------------------------------

NOVELAI_COMMENT = {
    "steps": 28,
    "sampler": "k_euler_ancestral",
    "seed": 2718281828,
    "strength": 0.7,
    "noise": 0.2,
    "scale": 11.0,
    "uc": "lowres, bad anatomy, bad hands",
}


def _novelai_png(comment: dict[str, Any]) -> Image.Image:
    pnginfo = PngImagePlugin.PngInfo()
    pnginfo.add_text("Title", "AI generated image")
    pnginfo.add_text("Description", "1girl, masterpiece, cherry blossoms")
    pnginfo.add_text("Software", "NovelAI")
    pnginfo.add_text("Source", "Stable Diffusion 1D44365E")
    pnginfo.add_text("Comment", json.dumps(comment))
    out = io.BytesIO()
    Image.new("RGB", (512, 768)).save(out, format="PNG", pnginfo=pnginfo)
    return _reopen(out.getvalue())


def test_novelai_png_converts_to_a1111_infotext() -> None:
    info, items = read_image_info(_novelai_png(NOVELAI_COMMENT))
    assert info == (
        "1girl, masterpiece, cherry blossoms\n"
        "Negative prompt: lowres, bad anatomy, bad hands\n"
        "Steps: 28, Sampler: Euler a, CFG scale: 11.0, Seed: 2718281828, Size: 512x768, Clip skip: 2, ENSD: 31337"
    )
    assert items["Software"] == "NovelAI"
    p = parse_infotext(info)
    assert (p["Sampler"], p["CFG scale"], p["Size-1"], p["Clip skip"]) == ("Euler a", "11.0", "512", "2")


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [("k_euler", "Euler"), ("k_dpmpp_2m", "DPM++ 2M"), ("ddim", "DDIM"), ("k_dpmpp_2s_ancestral", "Euler a")],
)
def test_novelai_sampler_names(sampler: str, expected: str) -> None:
    comment = json.dumps({**NOVELAI_COMMENT, "sampler": sampler})
    text = parse_novelai({"Software": "NovelAI", "Description": "p", "Comment": comment})
    assert text is not None
    assert parse_infotext(text)["Sampler"] == expected


def test_novelai_size_from_json_and_rejects() -> None:
    comment = json.dumps({**NOVELAI_COMMENT, "width": 832, "height": 1216})
    text = parse_novelai({"Software": "NovelAI", "Description": "p", "Comment": comment})
    assert text is not None and "Size: 832x1216" in text
    assert parse_novelai({"Software": "Other", "Description": "p", "Comment": comment}) is None
    assert parse_novelai({"Software": "NovelAI", "Description": "p", "Comment": "not json"}) is None
    assert parse_novelai({"Software": "NovelAI", "Description": "p", "Comment": json.dumps({"steps": 1})}) is None
