"""Infotext: the "generation parameters" text A1111 writes into every image, and reads back.

The format (A1111 `processing.create_infotext`, `infotext_utils.parse_generation_parameters`)::

    <prompt, possibly several lines>
    Negative prompt: <negative prompt, possibly several lines>
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512, Version: v1.10.1

Users paste these between A1111, Forge, SD.Next, civitai and us, so both directions follow A1111 to the letter.
Where A1111's own behaviour depends on UI state or settings we do not have, the choice made here is written
next to the code.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

# A1111's `re_param_code` is r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)': a key of at least two
# word/space/-/ characters, then either a JSON-quoted value (which may hold commas) or anything up to the next comma.
# Run as it is, `findall` restarts the key at every character of a long run of key characters that no ":" follows,
# so 100 KB of words without a colon (a PNG's "parameters" text, an API `infotext`) took two minutes of CPU. This
# pattern finds the same pairs in linear time: possessive quantifiers never give back what cannot lead to a match,
# and the last two alternatives skip such a run, or a run of blanks, in one step (their matches have an empty key
# and are dropped by `find_params`).
_PARAM_SCAN = re.compile(r'\s*+(\w[\w \-/]++):\s*+("(?:\\.|[^\\"])++"|[^,]*+)(?:,|$)|[\w \-/]++(?!:)|\s++')
IMAGE_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")

NEGATIVE_PROMPT_PREFIX = "Negative prompt:"

# The keys `create_infotext` writes before `extra_generation_params`, in its order. "Token merging ratio hr"
# sits here in A1111 too, right after "Token merging ratio".
CANONICAL_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
)
# Written after every extra parameter.
TRAILING_ORDER: tuple[str, ...] = ("Version", "User")

# Schedule types of A1111 1.10 (`modules/sd_schedulers.py`): (name, label, aliases). Old sampler names such as
# "DPM++ 2M Karras" carry one of these as a suffix.
SCHEDULERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("automatic", "Automatic", ()),
    ("uniform", "Uniform", ()),
    ("karras", "Karras", ()),
    ("exponential", "Exponential", ()),
    ("polyexponential", "Polyexponential", ()),
    ("sgm_uniform", "SGM Uniform", ("SGMUniform",)),
    ("kl_optimal", "KL Optimal", ()),
    ("align_your_steps", "Align Your Steps", ()),
    ("simple", "Simple", ()),
    ("normal", "Normal", ()),
    ("ddim", "DDIM", ()),
    ("beta", "Beta", ()),
)

# Samplers of A1111 1.10 with their aliases (k-diffusion, timestep and LCM lists). The aliases are how
# NovelAI names samplers in its PNGs.
SAMPLERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("DPM++ 2M", ("k_dpmpp_2m",)),
    ("DPM++ SDE", ("k_dpmpp_sde",)),
    ("DPM++ 2M SDE", ("k_dpmpp_2m_sde",)),
    ("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",)),
    ("DPM++ 2S a", ("k_dpmpp_2s_a",)),
    ("DPM++ 3M SDE", ("k_dpmpp_3m_sde",)),
    ("Euler a", ("k_euler_a", "k_euler_ancestral")),
    ("Euler", ("k_euler",)),
    ("LMS", ("k_lms",)),
    ("Heun", ("k_heun",)),
    ("DPM2", ("k_dpm_2",)),
    ("DPM2 a", ("k_dpm_2_a",)),
    ("DPM fast", ("k_dpm_fast",)),
    ("DPM adaptive", ("k_dpm_ad",)),
    ("Restart", ("restart",)),
    ("DDIM", ("ddim",)),
    ("DDIM CFG++", ("ddim_cfgpp",)),
    ("PLMS", ("plms",)),
    ("UniPC", ("unipc",)),
    ("LCM", ("k_lcm",)),
)

_SAMPLER_NAMES = frozenset(name for name, _ in SAMPLERS)
# A1111's `sd_samplers.samplers_map`: lower-cased name or alias -> name.
_SAMPLERS_BY_ALIAS: Mapping[str, str] = MappingProxyType(
    {key.lower(): name for name, aliases in SAMPLERS for key in (name, *aliases)}
)
_SCHEDULER_LABELS: Mapping[str, str] = MappingProxyType(
    {key: label for name, label, aliases in SCHEDULERS for key in (name, label, *aliases)}
)
# Longest first, so "DPM++ 2M SGM Uniform" loses " SGM Uniform" and not just " Uniform". (A1111 tries them in
# list order and would cut " Uniform"; no sampler it ever shipped ends that way, so the results agree.)
_SCHEDULER_SUFFIXES: tuple[tuple[str, str], ...] = tuple(
    sorted(_SCHEDULER_LABELS.items(), key=lambda item: len(item[0]), reverse=True)
)


# --- Writing -----------------------------------------------------------------------------------------------


def quote(text: str) -> str:
    """JSON-quote `text` when it holds a comma, colon or newline, exactly like A1111's `quote()`."""
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """Undo `quote`: a value in double quotes is read as JSON; anything else, or bad JSON, is kept as it is."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def format_value(value: Any) -> str:
    """Show one parameter value the way A1111 infotexts from its UI show it.

    A1111 writes `str(value)`, so what appears depends on the Python type it was handed: the UI's sliders give
    `CFG scale: 7` and `Hires upscale: 2`, while the same request through its API gives `7.0`. We write whole
    floats without the `.0`, which matches the PNGs users actually have; both forms parse to the same number.
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    return str(value)


def order_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Return `params` in A1111's key order: canonical keys, then the rest as given, then Version and User."""
    ordered = {key: params[key] for key in CANONICAL_ORDER if key in params}
    fixed = set(CANONICAL_ORDER) | set(TRAILING_ORDER)
    ordered.update((key, value) for key, value in params.items() if key not in fixed)
    ordered.update((key, params[key]) for key in TRAILING_ORDER if key in params)
    return ordered


def build_params_line(params: Mapping[str, Any]) -> str:
    """The `Key: value, Key: value` line: ordered, None dropped, values formatted and quoted like A1111."""
    parts = []
    for key, value in order_params(params).items():
        if value is None:
            continue
        # A1111 writes a parameter whose value is its own name as the bare name.
        if isinstance(value, str) and value == key:
            parts.append(key)
        else:
            parts.append(f"{key}: {quote(format_value(value))}")
    return ", ".join(parts)


def build_infotext(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """Build the full infotext for one image.

    Args:
        prompt: The positive prompt, written as is (it may span lines).
        negative_prompt: Written on a `Negative prompt:` line, which is left out when this is empty.
        params: Parameter name -> value, in any order (see `order_params`); None values are dropped.

    Returns:
        The text A1111 would write, stripped of outer whitespace as A1111 strips it.
    """
    negative = f"\n{NEGATIVE_PROMPT_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{build_params_line(params)}".strip()


# --- Reading -----------------------------------------------------------------------------------------------


def split_legacy_sampler(sampler: str) -> tuple[str, str | None]:
    """Split an old combined name such as "DPM++ 2M Karras" into ("DPM++ 2M", "Karras").

    Returns the name unchanged with None when it carries no schedule suffix. Only a known A1111 sampler is
    split off, so a custom sampler whose name happens to end in "Normal" or "Beta" is left alone.
    """
    for suffix, label in _SCHEDULER_SUFFIXES:
        if sampler.endswith(" " + suffix):
            base = sampler[: -(len(suffix) + 1)]
            if base in _SAMPLER_NAMES:
                return base, label
    return sampler, None


def sampler_from_alias(name: str, default: str = "Euler a") -> str:
    """Map a sampler name or alias (`k_euler_ancestral`) to its A1111 name, like `sd_samplers.samplers_map`."""
    return _SAMPLERS_BY_ALIAS.get(name.lower(), default)


def _old_hires_first_pass_size(width: int, height: int) -> tuple[int, int]:
    """A1111's `old_hires_fix_first_pass_dimensions`: about 512x512 pixels, same aspect, multiples of 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _restore_old_hires_fix_params(res: dict[str, Any]) -> None:
    """Infotexts from before late 2022 name the first pass size; turn it into Size + Hires resize.

    This is A1111's path with its default setting (`use_old_hires_fix_width_height` off).
    """
    first_w, first_h = res.get("First pass size-1"), res.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    try:
        first_w, first_h = int(first_w), int(first_h)
        width, height = int(res.get("Size-1", 512)), int(res.get("Size-2", 512))
    except ValueError:
        return  # A1111 would raise here; a damaged old infotext is not worth failing the whole paste for.
    if first_w == 0 or first_h == 0:
        first_w, first_h = _old_hires_first_pass_size(width, height)
    res["Size-1"], res["Size-2"] = first_w, first_h
    res["Hires resize-1"], res["Hires resize-2"] = width, height


# What A1111 fills in for keys an infotext does not mention, in the order it does so. The types are A1111's:
# most are strings, a few are ints.
_DEFAULTS_BEFORE_HIRES_FIX: tuple[tuple[str, Any], ...] = (
    ("Hires sampler", "Use same sampler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
)
_DEFAULTS_AFTER_HIRES_FIX: tuple[tuple[str, Any], ...] = (
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def _split_prompts(lines: list[str]) -> tuple[str, str]:
    """Prompt and negative prompt from the lines before the parameters line, as A1111 joins them."""
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False
    for raw_line in lines:
        line = raw_line.strip()
        if line.startswith(NEGATIVE_PROMPT_PREFIX):
            done_with_prompt = True
            line = line[len(NEGATIVE_PROMPT_PREFIX) :].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    return prompt, negative_prompt


def _apply_sampler_backcompat(res: dict[str, Any]) -> None:
    """Split old combined sampler names and spell schedule types by their labels.

    A1111 1.9+ does this when the parsed values are pasted into the UI (`get_sampler_from_infotext`); we do it
    here so every caller sees the modern pair. Unlike A1111 we keep the split-off schedule ("Karras") instead
    of turning it back into "Automatic" when it is the sampler's default: it means the same in A1111, and it
    stays right for a backend whose "Automatic" picks differently.
    """
    for sampler_key, schedule_key in (("Sampler", "Schedule type"), ("Hires sampler", "Hires schedule type")):
        sampler = res.get(sampler_key)
        if isinstance(sampler, str):
            base, label = split_legacy_sampler(sampler)
            if label is not None:
                # As in A1111, a schedule in the sampler's name wins over a separate "Schedule type".
                res[sampler_key], res[schedule_key] = base, label
        schedule = res.get(schedule_key)
        if isinstance(schedule, str) and schedule in _SCHEDULER_LABELS:
            res[schedule_key] = _SCHEDULER_LABELS[schedule]


def find_params(line: str) -> list[tuple[str, str]]:
    """The `(key, value)` pairs of a parameters line: what A1111's `re_param_code.findall(line)` returns."""
    return [(key, value) for key, value in _PARAM_SCAN.findall(line) if key]


def parse_infotext(text: str) -> dict[str, Any]:
    """Parse an infotext into A1111's parameter dict, like `parse_generation_parameters`.

    The result has "Prompt" and "Negative prompt", every `Key: value` of the last line (values are strings,
    JSON-quoted ones unquoted), `WxH` values split into `Key-1`/`Key-2`, and the defaults A1111 fills in for
    missing keys (Clip skip "1", Schedule type "Automatic", RNG "GPU", the Hires and inpaint defaults, ...).
    Old sampler names ("DPM++ 2M Karras") come back split into Sampler and Schedule type.

    The last line counts as parameters only when the A1111 regex finds at least three `Key: value` pairs in
    it; otherwise the whole text is prompt. Two A1111 steps that need its settings are left to the caller:
    extracting saved styles from the prompt, and the version-based compatibility flags.
    """
    res: dict[str, Any] = {}
    # A1111 splits on "\n" only; Windows line ends would leave "\r" on the last value.
    *lines, lastline = text.replace("\r\n", "\n").strip().split("\n")
    if len(find_params(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    res["Prompt"], res["Negative prompt"] = _split_prompts(lines)

    for key, value in find_params(lastline):
        if not value:
            continue  # A1111 fails on `value[0]` and drops such a key.
        if value[0] == '"' and value[-1] == '"':
            value = unquote(value)
        size = IMAGE_SIZE_RE.match(value)
        if size is not None:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value

    # A missing "Clip skip" means it was 1; A1111 only writes it when it is above 1.
    res.setdefault("Clip skip", "1")

    hypernet = res.get("Hypernet")
    if hypernet is not None:
        res["Prompt"] += f"<hypernet:{hypernet}:{res.get('Hypernet strength', '1.0')}>"

    if "Hires resize-1" not in res:
        res["Hires resize-1"], res["Hires resize-2"] = 0, 0
    for key, default in _DEFAULTS_BEFORE_HIRES_FIX:
        res.setdefault(key, default)
    _restore_old_hires_fix_params(res)
    for key, default in _DEFAULTS_AFTER_HIRES_FIX:
        res.setdefault(key, default)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False

    _apply_sampler_backcompat(res)
    return res


# --- NovelAI -----------------------------------------------------------------------------------------------


def parse_novelai(pnginfo: Mapping[str, Any], size: tuple[int, int] | None = None) -> str | None:
    """Turn a NovelAI PNG's text chunks into an A1111 infotext, as A1111's `read_info_from_image` does.

    NovelAI stores the prompt in `Description` and the rest as JSON in `Comment` (`steps`, `sampler`, `seed`,
    `scale`, `uc` = negative prompt, also `strength`, `noise`, which A1111 ignores and so do we). Sampler
    aliases map to A1111 names (`k_euler_ancestral` -> "Euler a"); unknown ones become "Euler a". A1111 always
    adds `Clip skip: 2, ENSD: 31337`, NovelAI's fixed settings.

    Args:
        pnginfo: The image's text items (PIL `Image.info`).
        size: The image's (width, height). A1111 takes it from the image; without it we use the JSON's
            `width`/`height`, and leave Size out if those are missing too.

    Returns:
        The infotext, or None if this is not a NovelAI image or its metadata is incomplete or not JSON.
    """
    if pnginfo.get("Software") != "NovelAI":
        return None
    try:
        info = json.loads(pnginfo["Comment"])
        description = pnginfo["Description"]
        sampler = sampler_from_alias(str(info["sampler"]))
        # Values go through str() unformatted, as in A1111's f-string: NovelAI's 11.0 stays "11.0".
        params = [
            f"Steps: {info['steps']}",
            f"Sampler: {sampler}",
            f"CFG scale: {info['scale']}",
            f"Seed: {info['seed']}",
        ]
        negative = info["uc"]
    except (KeyError, TypeError, ValueError):
        return None
    if size is None and isinstance(info.get("width"), int) and isinstance(info.get("height"), int):
        size = (info["width"], info["height"])
    if size is not None:
        params.append(f"Size: {size[0]}x{size[1]}")
    params += ["Clip skip: 2", "ENSD: 31337"]
    return f"{description}\n{NEGATIVE_PROMPT_PREFIX} {negative}\n{', '.join(params)}"


# --- Parsed infotext -> request fields ---------------------------------------------------------------------


def _to_int(value: Any) -> int:
    # A1111 casts through float for int fields, so "20.0" and 20 both work.
    return int(float(value))


def _to_float(value: Any) -> float:
    return float(value)


def _to_str(value: Any) -> str:
    return str(value)


def _to_bool(value: Any) -> bool:
    # A1111: the string "False" is False; anything else non-empty ("True", "CodeFormer") is True.
    if isinstance(value, str):
        return value not in ("", "False", "false", "0")
    return bool(value)


_Converter = Callable[[Any], Any]

# (infotext key, request field, converter) for txt2img and img2img alike.
_COMMON_FIELDS: tuple[tuple[str, str, _Converter], ...] = (
    ("Prompt", "prompt", _to_str),
    ("Negative prompt", "negative_prompt", _to_str),
    ("Steps", "steps", _to_int),
    ("Sampler", "sampler_name", _to_str),
    ("Schedule type", "scheduler", _to_str),
    ("CFG scale", "cfg_scale", _to_float),
    ("Seed", "seed", _to_int),
    ("Size-1", "width", _to_int),
    ("Size-2", "height", _to_int),
    ("Batch size", "batch_size", _to_int),
    ("Variation seed", "subseed", _to_int),
    ("Variation seed strength", "subseed_strength", _to_float),
    ("Seed resize from-1", "seed_resize_from_w", _to_int),
    ("Seed resize from-2", "seed_resize_from_h", _to_int),
    ("Denoising strength", "denoising_strength", _to_float),
    ("Face restoration", "restore_faces", _to_bool),
    ("Tiling", "tiling", _to_bool),
    ("NGMS", "s_min_uncond", _to_float),
    ("Refiner", "refiner_checkpoint", _to_str),
    ("Refiner switch at", "refiner_switch_at", _to_float),
)
_TXT2IMG_FIELDS: tuple[tuple[str, str, _Converter], ...] = (
    ("Hires upscale", "hr_scale", _to_float),
    ("Hires upscaler", "hr_upscaler", _to_str),
    ("Hires steps", "hr_second_pass_steps", _to_int),
    ("Hires resize-1", "hr_resize_x", _to_int),
    ("Hires resize-2", "hr_resize_y", _to_int),
    ("Hires checkpoint", "hr_checkpoint_name", _to_str),
    ("Hires sampler", "hr_sampler_name", _to_str),
    ("Hires schedule type", "hr_scheduler", _to_str),
    ("Hires prompt", "hr_prompt", _to_str),
    ("Hires negative prompt", "hr_negative_prompt", _to_str),
)
_MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
_IMG2IMG_FIELDS: tuple[tuple[str, str, _Converter], ...] = (
    ("Image CFG scale", "image_cfg_scale", _to_float),
    ("Mask blur", "mask_blur", _to_int),
    ("Masked content", "inpainting_fill", _MASKED_CONTENT.index),
    ("Inpaint area", "inpaint_full_res", lambda v: v == "Only masked"),
    ("Masked area padding", "inpaint_full_res_padding", _to_int),
    ("Mask mode", "inpainting_mask_invert", lambda v: int(v == "Inpaint not masked")),
)
# The settings A1111 tags with `OptionInfo(infotext=...)`; pasting puts them in `override_settings`.
# "Model hash" is left out, as A1111's default `disable_weights_auto_swap` leaves it out.
_SETTING_FIELDS: tuple[tuple[str, str, _Converter], ...] = (
    ("Clip skip", "CLIP_stop_at_last_layers", _to_int),
    ("ENSD", "eta_noise_seed_delta", _to_int),
    ("RNG", "randn_source", _to_str),
    ("Emphasis", "emphasis", _to_str),
    ("VAE", "sd_vae", _to_str),
    ("VAE Encoder", "sd_vae_encode_method", _to_str),
    ("VAE Decoder", "sd_vae_decode_method", _to_str),
    ("Token merging ratio", "token_merging_ratio", _to_float),
    ("Token merging ratio hr", "token_merging_ratio_hr", _to_float),
    ("Conditional mask weight", "inpainting_mask_weight", _to_float),
    ("Noise multiplier", "initial_noise_multiplier", _to_float),
    ("Extra noise", "img2img_extra_noise", _to_float),
    ("Pad conds", "pad_cond_uncond", _to_bool),
    ("Eta", "eta_ancestral", _to_float),
    ("Eta DDIM", "eta_ddim", _to_float),
    ("Schedule max sigma", "sigma_max", _to_float),
    ("Schedule min sigma", "sigma_min", _to_float),
    ("Schedule rho", "rho", _to_float),
    ("Skip Early CFG", "skip_early_cond", _to_float),
)
# Values meaning "same as the first pass", which the API expresses by leaving the field out.
_SAME_AS_FIRST_PASS = frozenset({"Use same sampler", "Use same scheduler", "Use same checkpoint"})


def _convert_fields(
    params: Mapping[str, Any], table: tuple[tuple[str, str, _Converter], ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, field, convert in table:
        value = params.get(key)
        if value is None or (isinstance(value, str) and value in _SAME_AS_FIRST_PASS):
            continue
        try:
            out[field] = convert(value)
        except (TypeError, ValueError):
            continue  # A1111 leaves a field it cannot convert untouched; so do we, by leaving it out.
    return out


def infotext_to_request_fields(
    params: Mapping[str, Any], mode: Literal["txt2img", "img2img"] = "txt2img"
) -> dict[str, Any]:
    """Map `parse_infotext` output to A1111 API request fields with proper types.

    This backs "paste infotext fills the fields" and the API's `infotext` field (which only fills fields the
    request did not set: the caller merges). Settings such as Clip skip go into `override_settings` under
    A1111's option names (`CLIP_stop_at_last_layers`). Fields only one mode has are mapped for that mode:
    hires fix for txt2img, mask and image CFG for img2img.

    `enable_hr` is true when the infotext has a Denoising strength and a hires scale, upscaler or non-zero
    resize. (A1111's test also accepts a zero "Hires resize-1", which its parser always fills in, so any
    txt2img infotext with a denoising strength turns hires fix on there; we do not copy that slip.)
    """
    fields = _convert_fields(params, _COMMON_FIELDS)
    if mode == "txt2img":
        fields.update(_convert_fields(params, _TXT2IMG_FIELDS))
        has_resize = any(str(params.get(key, 0)) not in ("0", "") for key in ("Hires resize-1", "Hires resize-2"))
        fields["enable_hr"] = "Denoising strength" in params and (
            "Hires upscale" in params or "Hires upscaler" in params or has_resize
        )
    else:
        fields.update(_convert_fields(params, _IMG2IMG_FIELDS))
    overrides = _convert_fields(params, _SETTING_FIELDS)
    if overrides:
        fields["override_settings"] = overrides
    return fields
