"""From a request's init image and mask to a `Canvas`: the pixels to encode, the mask the sampler sees, and
how the result is pasted back. Pure PIL (no torch), so every bad image or mask fails before a model loads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageChops, ImageOps

from modules.engine.image_input import to_mask, to_rgb
from modules.engine.img2img import prepare
from modules.engine.requests import Img2ImgRequest
from modules.errors import UserError

Note = Callable[[str], None]
EMPTY_MASK = "the mask is empty: paint the area to change"


@dataclass
class Canvas:
    """One init image, ready for the sampler."""

    pixels: Any  # RGB to encode: width x height, or for latent upscale the image's own size rounded to 8
    mask: Any = None  # "L" at width x height, white is repainted; None for plain img2img
    base: Any = None  # RGB the result is pasted back onto (None: the result is the image as generated)
    overlay: Any = None  # "L" at base's size: white shows the generated pixels, black keeps base's
    box: prepare.Box | None = None  # where the width x height result goes in base ("Only masked")

    def finish(self, generated: Any) -> Any:
        """The image the user gets: the generated pixels where the mask allows, the original elsewhere."""
        if self.base is None:
            return generated
        return prepare.paste_back(self.base, generated, self.overlay, self.box)


def prepare_canvases(request: Img2ImgRequest, note: Note) -> list[Canvas]:
    """One canvas per init image, all sharing the request's mask."""
    mask = None if request.mask is None else to_mask(request.mask, "mask")
    images = [to_rgb(image, f"init_images[{i}]") for i, image in enumerate(request.init_images)]
    return [make_canvas(image, mask, request, note) for image in images]


def make_canvas(image: Any, mask: Any, request: Img2ImgRequest, note: Note) -> Canvas:
    """`image` (RGB) and `mask` ("L" or None) prepared as `request` says."""
    width, height, mode = request.width, request.height, request.resize_mode

    # 1. Plain img2img: only the resize. Latent upscale encodes at the image's own size (rounded to 8).
    if mask is None:
        if mode == prepare.LATENT_UPSCALE:
            return Canvas(image.resize(_multiple_of_8(image.size), Image.Resampling.LANCZOS))
        return Canvas(prepare.resize_image(mode, image, width, height))

    # 2. The mask on the image's pixel grid, binary (mask_round) and inverted as asked.
    mask = _aligned(mask, image.size, note)
    mask = prepare.binary_mask(mask, request.mask_round)
    if request.inpainting_mask_invert:
        mask = ImageOps.invert(mask)

    # 3. Outpainting: "Resize and fill" with a mask repaints the border the fill invents, so the new area is
    #    generated rather than left as stretched edge pixels. The canvas is then width x height in both areas.
    if mode == prepare.RESIZE_AND_FILL:
        border = prepare.border_mask(image.size, width, height)
        image = prepare.resize_image(mode, image, width, height)
        mask = ImageChops.lighter(prepare.resize_image(mode, mask, width, height), border)

    # 4. A mask with nothing painted would change nothing: say so instead of returning the input.
    if mask.getbbox() is None:
        raise UserError(EMPTY_MASK, field="mask")
    mask = prepare.blur_mask(mask, request.mask_blur_x, request.mask_blur_y)

    # 5. The inpaint area, then the masked content's pixel fill (A1111 fills for every choice but "original").
    canvas = _only_masked(image, mask, request) if request.inpaint_full_res else _whole_picture(image, mask, request)
    if request.inpainting_fill != 1:
        canvas.pixels = prepare.fill_masked(canvas.pixels, canvas.mask)
    return canvas


def _only_masked(image: Any, mask: Any, request: Img2ImgRequest) -> Canvas:
    """Generate the masked area (plus padding, grown to the output's aspect) at full width x height, then paste
    it back into the untouched picture: the result keeps the init image's size, as in A1111."""
    width, height = request.width, request.height
    box = prepare.crop_region(mask, request.inpaint_full_res_padding)
    if box is None:  # only a blur that rounded to nothing; step 4 has already refused truly empty masks
        raise UserError(EMPTY_MASK, field="mask")
    box = prepare.expand_crop_region(box, width, height, image.width, image.height)
    pixels = prepare.resize_image(prepare.RESIZE_AND_FILL, image.crop(box), width, height)
    gen_mask = prepare.resize_image(prepare.RESIZE_AND_FILL, mask.crop(box), width, height)
    return Canvas(pixels, gen_mask, base=image, overlay=mask, box=box)


def _whole_picture(image: Any, mask: Any, request: Img2ImgRequest) -> Canvas:
    # Latent upscale has no working inpaint path in A1111 (its mask and image sizes disagree); a masked
    # request with it is resized in pixels like "Just resize".
    mode = prepare.JUST_RESIZE if request.resize_mode == prepare.LATENT_UPSCALE else request.resize_mode
    pixels = prepare.resize_image(mode, image, request.width, request.height)
    gen_mask = prepare.resize_image(mode, mask, request.width, request.height)
    return Canvas(pixels, gen_mask, base=pixels, overlay=prepare.overlay_for_whole_picture(gen_mask))


def _aligned(mask: Any, size: tuple[int, int], note: Note) -> Any:
    if mask.size == size:
        return mask
    # A1111 stretches a mismatched mask onto the image when it builds the paste-back overlay; doing it first
    # keeps the crop, the sampler's mask and the overlay in agreement.
    note(f"The mask is {mask.width}x{mask.height} but the image is {size[0]}x{size[1]}: "
         "the mask was stretched to fit the image.")
    return mask.resize(size, Image.Resampling.LANCZOS)


def _multiple_of_8(size: tuple[int, int]) -> tuple[int, int]:
    return max(8, round(size[0] / 8) * 8), max(8, round(size[1] / 8) * 8)
