"""POST /sdapi/v1/extra-single-image and /sdapi/v1/extra-batch-images: A1111's Extras over the API.

Both submit an "extras" job to the queue the UI uses and wait for it, then answer A1111's shapes:
`{html_info, image}` and `{html_info, images}`. As in A1111's API nothing is saved to disk (its `save_output=False`).
Every image is decoded in full before the job is queued, so a bad one is a 400 that names it (A1111 answers 500),
and an unknown upscaler is a 400 listing the valid names. `notes` (no face found, ...) is our addition; A1111
clients ignore it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modules.api.images import decode_b64_image, encode_b64
from modules.api.sdapi.errors import JobFailed
from modules.engine.extras import ExtrasRequest, ExtrasResult
from modules.engine.extras.steps import check_face_restorers, check_upscalers
from modules.errors import UserError, from_validation
from modules.jobs import JobState
from modules.services import Services


class ExtrasBaseApiRequest(BaseModel):
    """A1111's `ExtrasBaseRequest`. Like the other /sdapi models, ranges are the engine request's to check (its
    messages become 400s), and unknown keys are ignored as A1111's pydantic v1 models ignore them."""

    model_config = ConfigDict(extra="ignore")

    resize_mode: int = Field(0, description="0: upscale by upscaling_resize; 1: to upscaling_resize_w x _h")
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasBaseApiRequest):
    image: str = Field("", description="the image, base64 (or a data: URL)")


class FileData(BaseModel):
    data: str = Field(description="the file, base64")
    name: str = Field("", description="its file name")


class ExtrasBatchImagesRequest(ExtrasBaseApiRequest):
    imageList: list[FileData] = Field(default_factory=list)  # noqa: N815 - A1111's field name


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str | None = None
    notes: list[str] = Field(default_factory=list)


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def router(services: Services) -> APIRouter:
    r = APIRouter()

    @r.post("/extra-single-image", response_model=ExtrasSingleImageResponse)
    def extra_single_image(req: ExtrasSingleImageRequest) -> dict[str, Any]:
        """Upscale and/or restore faces in one image."""
        if not req.image.strip():
            raise UserError("image: send the image to process, as base64", field="image")
        result = _run(services, req, [open_image(req.image, "image")], [])
        shown = result.shown
        return {"html_info": result.html_info, "image": _encode(services, shown[0]) if shown else None,
                "notes": result.notes}

    @r.post("/extra-batch-images", response_model=ExtrasBatchImagesResponse)
    def extra_batch_images(req: ExtrasBatchImagesRequest) -> dict[str, Any]:
        """Upscale and/or restore faces in several images; the answer keeps their order."""
        if not req.imageList:
            raise UserError("imageList: send at least one image", field="imageList")
        images = [open_image(item.data, _item_field(i, item)) for i, item in enumerate(req.imageList)]
        result = _run(services, req, images, [item.name for item in req.imageList])
        return {"html_info": result.html_info, "images": [_encode(services, item) for item in result.shown],
                "notes": result.notes}

    return r


def open_image(text: str, field: str) -> Any:
    """A base64 image decoded in full now, so a truncated or corrupt one is refused before anything is queued."""
    image = decode_b64_image(text, field)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{field} could not be decoded (truncated or corrupt image): {e}", field=field) from None
    return image


def _item_field(index: int, item: FileData) -> str:
    return f"imageList[{index}] ({item.name})" if item.name else f"imageList[{index}]"


def _run(services: Services, req: ExtrasBaseApiRequest, images: list[Any], names: list[str]) -> ExtrasResult:
    fields = req.model_dump(exclude={"image", "imageList"})
    try:
        request = ExtrasRequest.model_validate({**fields, "images": images, "names": names, "save_images": False})
    except ValidationError as e:
        raise from_validation(e) from None
    check_upscalers(services.engine, request)
    check_face_restorers(services.engine, request)
    job = services.jobs.submit("extras", request)
    job.wait()
    if job.state is JobState.FAILED:
        raise JobFailed(job)
    if job.state is not JobState.DONE:
        # As txt2img answers a cancelled job: no images, and a note that says why.
        return ExtrasResult(notes=["the job was cancelled before it finished"])
    result: ExtrasResult = job.result
    return result


def _encode(services: Services, item: Any) -> str:
    # A1111's API returns the image with its postprocessing infotext embedded, as its save would write it.
    return encode_b64(item.image, item.saved_infotext or None, services.settings.get)
