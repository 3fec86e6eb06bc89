"""The pure image and mask operations behind img2img and inpainting (no model, no torch)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules.engine.img2img import prepare
from modules.engine.img2img.canvas import EMPTY_MASK, make_canvas
from modules.engine.requests import Img2ImgRequest
from modules.errors import UserError


def halves(width: int, height: int) -> Image.Image:
    """Red left half, blue right half."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    return image


def request(**fields) -> Img2ImgRequest:
    return Img2ImgRequest(init_images=[Image.new("RGB", (8, 8))], sampler_name="Euler",
                          **{"width": 64, "height": 64, **fields})


# --- resize modes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, target, cover, expected", [
    ((100, 50), (64, 64), True, (-32, 0, 128, 64)),  # A1111 mode 1: scaled to 128x64, cropped to the middle
    ((100, 50), (64, 64), False, (0, 16, 64, 32)),  # A1111 mode 2: scaled to 64x32, 16 px bands to fill
    ((50, 100), (64, 32), False, (24, 0, 16, 32)),
    ((64, 64), (64, 64), False, (0, 0, 64, 64)),
])
def test_fit_box(size, target, cover, expected) -> None:
    assert prepare.fit_box(size, *target, cover=cover) == expected


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_every_resize_mode_gives_the_target_size(mode: int) -> None:
    assert prepare.resize_image(mode, halves(100, 30), 64, 48).size == (64, 48)
    assert prepare.resize_image(mode, Image.new("L", (30, 100)), 64, 48).mode == "L"


def test_crop_and_resize_keeps_the_middle() -> None:
    wide = Image.new("RGB", (200, 100), (0, 255, 0))
    wide.paste((255, 0, 0), (0, 0, 30, 100))  # within the outer quarters, which are cropped away
    wide.paste((255, 0, 0), (170, 0, 200, 100))
    out = np.asarray(prepare.resize_image(1, wide, 64, 64)).astype(int)
    assert np.abs(out - (0, 255, 0)).max() <= 1


def test_resize_and_fill_stretches_the_edges_into_the_border() -> None:
    wide = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8))
    out = np.asarray(prepare.resize_image(2, wide, 64, 64))
    assert (out[16:48] == np.asarray(wide)).all()
    assert (out[:16] == np.asarray(wide)[:1]).all() and (out[48:] == np.asarray(wide)[-1:]).all()
    tall = np.asarray(prepare.resize_image(2, wide.rotate(90, expand=True), 64, 64))
    assert (tall[:, :16] == tall[:, 16:17]).all() and (tall[:, 48:] == tall[:, 47:48]).all()


def test_border_mask_marks_what_the_fill_invents() -> None:
    mask = np.asarray(prepare.border_mask((64, 32), 64, 64))
    assert (mask[:16] == 255).all() and (mask[48:] == 255).all() and (mask[16:48] == 0).all()


# --- masks --------------------------------------------------------------------------------------------------


def test_binary_mask_thresholds_above_half_grey() -> None:
    grey = Image.fromarray(np.array([[0, 128, 129, 255]], dtype=np.uint8))
    assert np.asarray(prepare.binary_mask(grey, True)).tolist() == [[0, 0, 255, 255]]
    assert np.asarray(prepare.binary_mask(grey, False)).tolist() == [[0, 128, 129, 255]]


@pytest.mark.parametrize("sigma_x, sigma_y", [(4, 4), (6, 1), (0, 3), (40, 40)])
def test_blur_matches_opencv_as_a1111_calls_it(sigma_x: int, sigma_y: int) -> None:
    cv2 = pytest.importorskip("cv2")
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[10:30, 20:41] = 255
    expected = mask
    if sigma_x:
        expected = cv2.GaussianBlur(expected, (2 * int(2.5 * sigma_x + 0.5) + 1, 1), sigma_x)
    if sigma_y:
        expected = cv2.GaussianBlur(expected, (1, 2 * int(2.5 * sigma_y + 0.5) + 1), sigma_y)
    ours = np.asarray(prepare.blur_mask(Image.fromarray(mask), sigma_x, sigma_y))
    # OpenCV sums 8-bit images in fixed point, so a level or two apart where the kernel is wide.
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 2


def test_blur_reaches_exactly_the_kernel_radius() -> None:
    mask = Image.new("L", (61, 61), 0)
    mask.putpixel((30, 30), 255)
    out = np.asarray(prepare.blur_mask(mask, 20, 0), dtype=np.float32)
    assert out[30, 0] >= 0 and (out[:29] == 0).all()  # x only
    line = prepare._blur_axis(np.asarray(mask, dtype=np.float32), 4.0, 1)[30]
    assert (line[30 - 10:30 + 11] > 0).all() and line[19] == 0 and line[41] == 0  # radius int(2.5 * 4 + 0.5)


def test_crop_region_and_a1111s_example_expansion() -> None:
    mask = Image.new("L", (512, 512), 0)
    mask.paste(255, (100, 200, 228, 232))  # a 128x32 stroke
    assert prepare.crop_region(mask, 0) == (100, 200, 228, 232)
    assert prepare.crop_region(mask, 300) == (0, 0, 512, 512)
    assert prepare.crop_region(Image.new("L", (8, 8)), 4) is None
    # "if user drew mask in a 128x32 region, and the dimensions for processing are 512x512, the region will be
    # expanded to 128x128" (A1111's masking.expand_crop_region docstring)
    assert prepare.expand_crop_region((100, 200, 228, 232), 512, 512, 512, 512) == (100, 152, 228, 280)


def test_expansion_is_shifted_back_inside_the_image() -> None:
    assert prepare.expand_crop_region((0, 0, 128, 32), 512, 512, 512, 512) == (0, 0, 128, 128)
    assert prepare.expand_crop_region((10, 480, 138, 512), 512, 512, 512, 512) == (10, 384, 138, 512)
    assert prepare.expand_crop_region((0, 0, 100, 10), 64, 64, 100, 50) == (0, 0, 100, 50)  # cut at the edge


def test_fill_takes_the_surrounding_colour_and_keeps_the_rest() -> None:
    image = Image.new("RGB", (64, 64), (20, 200, 60))
    image.paste((255, 255, 255), (16, 16, 48, 48))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    out = np.asarray(prepare.fill_masked(image, mask)).astype(int)
    assert (out[:16] == (20, 200, 60)).all()  # unpainted pixels come back exactly
    assert np.abs(out[32, 32] - (20, 200, 60)).max() <= 2  # the white hole takes the green around it


def test_paste_back_keeps_base_outside_the_overlay() -> None:
    base = halves(80, 60)
    generated = Image.new("RGB", (32, 32), (0, 255, 0))
    overlay = Image.new("L", base.size, 0)
    overlay.paste(255, (20, 10, 40, 30))
    out = np.asarray(prepare.paste_back(base, generated, overlay, (10, 10, 50, 50)))
    kept = np.asarray(overlay) == 0
    assert (out[kept] == np.asarray(base)[kept]).all() and (out[~kept] == (0, 255, 0)).all()


def test_latent_mask_rounds_with_mask_round() -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 30, 64))
    assert set(np.unique(prepare.latent_mask(mask, 8, 8, True))) <= {0.0, 1.0}
    assert len(np.unique(prepare.latent_mask(mask, 8, 8, False))) > 2


# --- canvases -----------------------------------------------------------------------------------------------


def test_plain_canvas_and_latent_upscale_size() -> None:
    assert make_canvas(halves(100, 50), None, request(), print).pixels.size == (64, 64)
    latent = make_canvas(halves(101, 43), None, request(resize_mode=3), print)
    assert latent.pixels.size == (104, 40) and latent.mask is None and latent.finish("x") == "x"


def test_only_masked_canvas() -> None:
    image = halves(200, 100)
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (90, 40, 110, 50))
    canvas = make_canvas(image, mask, request(mask_blur=0, inpaint_full_res_padding=5), print)
    assert canvas.box == (85, 30, 115, 60)  # 30x20 with padding, grown to the 1:1 output
    assert canvas.pixels.size == canvas.mask.size == (64, 64) and canvas.base.size == (200, 100)


def test_whole_picture_canvas_doubles_the_overlay() -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(100, (0, 0, 32, 64))
    canvas = make_canvas(halves(64, 64), mask, request(mask_blur=0, mask_round=False, inpaint_full_res=False), print)
    assert canvas.box is None and np.asarray(canvas.overlay)[0, 0] == 200


def test_outpaint_canvas_masks_the_border() -> None:
    canvas = make_canvas(halves(64, 32), Image.new("L", (64, 32)), request(resize_mode=2, mask_blur=0,
                                                                          inpaint_full_res=False), print)
    mask = np.asarray(canvas.mask)
    assert (mask[:16] == 255).all() and (mask[16:48] == 0).all()


def test_mask_size_mismatch_is_noted_and_empty_masks_refused() -> None:
    notes: list[str] = []
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 8, 8))
    make_canvas(halves(64, 64), mask, request(), notes.append)
    assert notes and "32x32" in notes[0] and "64x64" in notes[0]
    with pytest.raises(UserError, match=EMPTY_MASK):
        make_canvas(halves(64, 64), Image.new("L", (64, 64), 100), request(), print)  # rounds to nothing
