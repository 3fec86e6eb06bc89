"""The "extras" job's request: A1111's `extra-single-image` fields, plus the images (or a server folder).

Field names, defaults and ranges are A1111's `ExtrasBaseRequest` (modules/api/models.py), so the API adapter passes
them through unchanged and the job API takes what an A1111 client knows. What the job works on is either `images`
(base64 or PIL, with optional `names` for the saved files) or `input_dir`, a folder on the server; never both.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from modules.engine.image_input import ImageValue

NONE = "None"
# A1111's scale-by slider goes to 8; its API allows the same.
MAX_SCALE = 8.0
# Targets for "Scale to": A1111's sliders stop at 8192; the pixel limit is checked when the size is known.
MAX_SIDE = 16384
# The two face restorers A1111's Extras tab offers, by the names the restorer registry lists them under.
GFPGAN = "GFPGAN"
CODEFORMER = "CodeFormer"
NOTHING_TO_DO = ("nothing to do: choose Upscaler 1, or set GFPGAN or CodeFormer visibility above 0")


class ExtrasOptions(BaseModel):
    """What to do to each image: A1111's `ExtrasBaseRequest`."""

    resize_mode: Literal[0, 1] = Field(0, description="0: scale by upscaling_resize; 1: to upscaling_resize_w x "
                                       "upscaling_resize_h (crop to fit with upscaling_crop)")
    show_extras_results: bool = Field(True, description="folder batch: return the images as well as saving them")
    gfpgan_visibility: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    codeformer_visibility: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    codeformer_weight: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False,
                                     description="0 = maximum effect, 1 = minimum effect")
    upscaling_resize: float = Field(2.0, gt=0.0, le=MAX_SCALE, allow_inf_nan=False)
    upscaling_resize_w: int = Field(512, ge=1, le=MAX_SIDE)
    upscaling_resize_h: int = Field(512, ge=1, le=MAX_SIDE)
    upscaling_crop: bool = True
    upscaler_1: str = NONE
    upscaler_2: str = NONE
    extras_upscaler_2_visibility: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    upscale_first: bool = Field(False, description="upscale before restoring faces (else faces first)")

    @property
    def upscales(self) -> bool:
        # A1111 skips the whole upscale step, Upscaler 2 included, when Upscaler 1 is None.
        return self.upscaler_1 != NONE

    @property
    def blends_second(self) -> bool:
        return self.upscales and self.upscaler_2 != NONE and self.extras_upscaler_2_visibility > 0

    @property
    def face_steps(self) -> list[tuple[str, float]]:
        """(restorer, visibility) for each face restorer to run, in A1111's order (GFPGAN, then CodeFormer)."""
        steps = [(GFPGAN, self.gfpgan_visibility), (CODEFORMER, self.codeformer_visibility)]
        return [(name, visibility) for name, visibility in steps if visibility > 0]

    @model_validator(mode="after")
    def _something_to_do(self) -> ExtrasOptions:
        if not self.upscales and not self.face_steps:
            raise ValueError(NOTHING_TO_DO)
        return self


class ExtrasRequest(ExtrasOptions):
    """One "extras" job: the options applied to `images`, or to every image in the server folder `input_dir`.

    Folder jobs save into `output_dir` under each file's own name, or into outputs/extras-images when it is
    empty. Callers must apply the LAN rule (`AccessPolicy.check_server_paths`) before submitting one.
    """

    images: list[ImageValue] = Field(default_factory=list, description="base64 images (or PIL from the UI)")
    names: list[str] = Field(default_factory=list, description="file names of `images`, in order (optional); "
                             "a named image is saved under its own name, as A1111's batch does")
    input_dir: str = Field("", description="a folder on the server; every image in it is processed")
    output_dir: str = Field("", description="where a folder batch saves (empty: outputs/extras-images)")
    save_images: bool = Field(True, description="save to disk (A1111's API does not save)")

    @model_validator(mode="after")
    def _one_source(self) -> ExtrasRequest:
        if self.input_dir.strip() and self.images:
            raise ValueError("give images or input_dir, not both")
        if not self.input_dir.strip() and not self.images:
            raise ValueError("images: choose an image to process")
        if len(self.names) > len(self.images):
            raise ValueError(f"names: {len(self.names)} names for {len(self.images)} images")
        if "\x00" in self.input_dir or "\x00" in self.output_dir:
            raise ValueError("input_dir/output_dir must not contain NUL characters")
        return self

    @property
    def from_folder(self) -> bool:
        return bool(self.input_dir.strip())

    def name_of(self, index: int) -> str:
        return self.names[index] if index < len(self.names) else ""
