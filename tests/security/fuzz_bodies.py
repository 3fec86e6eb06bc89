"""Hypothesis strategies for generation requests that get past validation often enough to run real jobs.

Schemathesis, which fuzzes from the schema alone, almost never sends a txt2img body that the engine accepts:
the schema cannot say which sampler names exist or what the size limit is. These strategies pick a random
subset of the A1111 fields, mostly with values the engine takes (real sampler names, sizes the tiny model
handles in milliseconds) and sometimes with edge values (0, NaN, infinity, huge seeds, 1x1 images, unknown
names), so the sampling, hires, img2img and upscaling code itself is fuzzed, through HTTP.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from hypothesis import strategies as st
from PIL import Image

def mostly(valid: st.SearchStrategy[Any], *edges: Any, one_in: int = 10) -> st.SearchStrategy[Any]:
    """`valid`, and one time in `one_in` an edge value. With ~20 optional fields per body, a field that is often
    invalid would have the engine refuse nearly every body before any sampling code runs."""
    edge = st.sampled_from(edges)
    return st.integers(1, one_in).flatmap(lambda n: edge if n == 1 else valid)


STEPS = mostly(st.integers(1, 3), 0, 501)
SIDES = mostly(st.sampled_from([8, 16, 24, 40, 64]), 0, 72, 4096)
NAN_INF = (float("nan"), float("inf"), float("-inf"), 1e9, -1.0)
# A1111 prompt syntax, well and badly formed, and one time in four random text (NUL and lone surrogates included).
_PROMPT_SAMPLES = st.sampled_from([
    "", "a cat", "(red:1.3) [cat:dog:0.5] [a|b] BREAK sky", "<lora:missing:0.8> a", "((((((((((deep))))))))))",
    "[[[x]]] \\(escaped\\) :3 (unclosed", "[from:to:7]", "AND a AND b:0.5", "emoji 🐱 " * 60, "x" * 3000,
])
PROMPTS = st.integers(1, 4).flatmap(lambda n: st.text(max_size=60) if n == 1 else _PROMPT_SAMPLES)


def png_b64(width: int, height: int, mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128 if mode == "L" else (200, 40, 40)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def images() -> st.SearchStrategy[str]:
    """Small PNGs of awkward shapes and modes, and now and then something that is not an image at all."""
    sizes = st.sampled_from([(16, 16), (64, 64), (1, 1), (300, 7), (8, 96)])
    modes = st.sampled_from(["RGB", "RGBA", "L", "P"])
    pngs = st.builds(lambda size, mode: png_b64(*size, mode), sizes, modes)
    return mostly(pngs, "", "not base64!", base64.b64encode(b"GIF89a....").decode(), "data:image/png;base64,")


def masks() -> st.SearchStrategy[str]:
    """Masks with something to repaint (a white box on black), now and then an empty one or not an image."""
    def box(size: tuple[int, int]) -> str:
        image = Image.new("L", size, 0)
        image.paste(255, (size[0] // 4, size[1] // 4, max(size[0] // 4 + 1, 3 * size[0] // 4),
                          max(size[1] // 4 + 1, 3 * size[1] // 4)))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    sizes = st.sampled_from([(16, 16), (64, 64), (300, 7), (1, 1)])
    return mostly(st.builds(box, sizes), _black_png(), "junk")


def _black_png() -> str:
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 0).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _common(samplers: list[str], schedulers: list[str]) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "prompt": PROMPTS,
        "negative_prompt": PROMPTS,
        "seed": mostly(st.integers(-1, 2**32 - 1), -2, 2**63),
        "subseed": mostly(st.integers(-1, 2**32 - 1), -2),
        "subseed_strength": mostly(st.floats(0, 1), *NAN_INF, 1.5),
        "seed_resize_from_w": st.sampled_from([-1, 0, 8, 64, 100_000]),
        "seed_resize_from_h": st.sampled_from([-1, 0, 8, 64, 100_000]),
        "sampler_name": mostly(st.sampled_from(samplers), "nope", ""),
        # Mostly the sampler's own schedule: a named one fits only some samplers (a clear 400 otherwise).
        "scheduler": mostly(st.none(), *schedulers, "bogus", one_in=4),
        "batch_size": mostly(st.integers(1, 3), 0, 65),
        "n_iter": mostly(st.integers(1, 3), 0, 1001),
        # Never 0..1 or NaN (no classifier-free guidance): with one image and a 1x1 deepest UNet level the tiny
        # test UNet, whose GroupNorms have one channel per group, makes torch refuse ("more than 1 value per
        # channel"). Real checkpoints have at least 10 channels per group and take those values fine.
        "cfg_scale": mostly(st.floats(1.5, 30), -1.0, 1e9, float("inf"), float("-inf")),
        "eta": mostly(st.floats(0, 1), *NAN_INF),
        "styles": mostly(st.sampled_from([[], ["Film"]]), ["missing style"]),
        "restore_faces": mostly(st.just(False), True),  # no face restorer is installed: True is a clear 400
        "save_images": st.booleans(),
        "denoising_strength": mostly(st.floats(0, 1), *NAN_INF),
        "override_settings": st.fixed_dictionaries({}, optional={
            "samples_format": mostly(st.sampled_from(["png", "jpg", "webp"]), "gif"),
            "CLIP_stop_at_last_layers": mostly(st.integers(1, 12), 0, 13),
            "jpeg_quality": mostly(st.integers(1, 100), 0, 101),
            "sd_vae": mostly(st.sampled_from(["Automatic", "None"]), "missing.safetensors"),
        }),
        "override_settings_restore_afterwards": st.booleans(),
        "infotext": mostly(st.sampled_from(["a cat\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 16x16",
                                            ""]), "Steps: banana, Size: 9999999x1"),
    }


def txt2img_bodies(samplers: list[str], schedulers: list[str], upscalers: list[str]) -> st.SearchStrategy[dict]:
    fields = _common(samplers, schedulers) | {
        "enable_hr": st.booleans(),
        "hr_scale": mostly(st.floats(1.0, 2.0), 0.5, *NAN_INF),
        "hr_upscaler": mostly(st.sampled_from([*upscalers, "Latent", "Latent (nearest)"]), "bogus"),
        "hr_second_pass_steps": st.integers(0, 3),
        "hr_resize_x": mostly(st.sampled_from([0, 16, 64]), 100_000),
        "hr_resize_y": st.sampled_from([0, 16, 64]),
        "hr_sampler_name": mostly(st.sampled_from([*samplers[:3], "Use same sampler"]), "bogus"),
    }
    return st.fixed_dictionaries({"width": SIDES, "height": SIDES, "steps": STEPS}, optional=fields)


def img2img_bodies(samplers: list[str], schedulers: list[str]) -> st.SearchStrategy[dict]:
    fields = _common(samplers, schedulers) | {
        "mask": masks(),
        "resize_mode": mostly(st.integers(0, 3), -1, 4),
        "mask_blur": mostly(st.integers(0, 64), -1, 300),
        "inpainting_fill": mostly(st.integers(0, 3), -1, 4),
        "inpaint_full_res": st.booleans(),
        "inpaint_full_res_padding": mostly(st.integers(0, 64), -1),
        "inpainting_mask_invert": mostly(st.integers(0, 1), 2),
        "initial_noise_multiplier": mostly(st.floats(0, 2), *NAN_INF),
        "image_cfg_scale": mostly(st.floats(0, 5), *NAN_INF),
        "include_init_images": st.booleans(),
    }
    return st.fixed_dictionaries(
        {"init_images": mostly(st.lists(images(), min_size=1, max_size=2), []), "width": SIDES, "height": SIDES,
         "steps": STEPS},
        optional=fields)


def extras_bodies(upscalers: list[str]) -> st.SearchStrategy[dict]:
    real = [name for name in upscalers if name != "None"] or upscalers
    names = mostly(st.sampled_from(real), "None", "bogus")
    return st.fixed_dictionaries({"image": images(), "upscaler_1": names}, optional={
        "resize_mode": mostly(st.integers(0, 1), -1, 2),
        "upscaling_resize": mostly(st.floats(0.5, 4), 0.0, 9.0, *NAN_INF),
        "upscaling_resize_w": mostly(st.sampled_from([1, 64]), 0, 70_000),
        "upscaling_resize_h": mostly(st.sampled_from([1, 64]), 0),
        "upscaling_crop": st.booleans(),
        "upscaler_2": names,
        "extras_upscaler_2_visibility": mostly(st.floats(0, 1), -1.0, 2.0, *NAN_INF),
        # No face restorer is installed: any visibility above 0 is a clear 400, so mostly 0.
        "gfpgan_visibility": mostly(st.just(0.0), 0.5, 1.0, one_in=5),
        "codeformer_visibility": mostly(st.just(0.0), 0.5, 1.0, one_in=5),
        "upscale_first": st.booleans(),
    })
