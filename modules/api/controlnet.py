"""sd-webui-controlnet's own routes (`/controlnet/...`), so its clients (webuiapi's `controlnet_*` calls, Krita
and Photoshop plug-ins) find the models and preprocessors here. Served with `--api` beside `/sdapi/v1`; the units
themselves travel in `alwayson_scripts` (modules.api.sdapi.scripts).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from modules.api.images import decode_b64_image, encode_png_b64
from modules.engine.controlnet import MAX_UNITS
from modules.engine.controlnet.models import controlnet_titles
from modules.engine.controlnet.preprocessors import preprocessor_details, preprocessor_names, run_preprocessor
from modules.errors import UserError
from modules.services import Services

# The API generation of sd-webui-controlnet this mirrors (its /controlnet/version answer).
API_VERSION = 2


class DetectRequest(BaseModel):
    """POST /controlnet/detect, with sd-webui-controlnet's field names."""

    model_config = ConfigDict(extra="ignore")

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list, description="base64 images")
    controlnet_images: list[str] | None = Field(None, description="older clients' name for controlnet_input_images")
    controlnet_processor_res: float = -1
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1


def router(services: Services) -> APIRouter:
    r = APIRouter(prefix="/controlnet", tags=["controlnet"])

    @r.get("/version")
    def version() -> dict[str, int]:
        return {"version": API_VERSION}

    @r.get("/model_list")
    def model_list(update: bool = True) -> dict[str, list[str]]:
        """The ControlNet models in models/ControlNet, as `name [hash]` titles; `update` rescans the folder."""
        if update:
            services.models.refresh("ControlNet")
        return {"model_list": controlnet_titles(services.models)}

    @r.get("/module_list")
    def module_list(alias_names: bool = False) -> dict[str, Any]:
        """The preprocessors: internal names by default, UI labels with `alias_names=true`."""
        return {"module_list": preprocessor_names(alias_names), "module_detail": preprocessor_details(alias_names)}

    @r.get("/settings")
    def settings() -> dict[str, int]:
        return {"control_net_unit_count": MAX_UNITS}

    @r.post("/detect")
    def detect(req: DetectRequest) -> dict[str, Any]:
        """Run a preprocessor on each image; answers the control maps as base64 PNGs."""
        images = req.controlnet_input_images or req.controlnet_images or []
        if not images:
            raise UserError("controlnet_input_images: send at least one base64 image",
                            field="controlnet_input_images")
        annotators = services.engine.controlnets.annotators
        maps = [run_preprocessor(req.controlnet_module, decode_b64_image(text, f"controlnet_input_images[{i}]"),
                                 req.controlnet_processor_res, req.controlnet_threshold_a, req.controlnet_threshold_b,
                                 annotators=annotators)
                for i, text in enumerate(images)]
        return {"images": [encode_png_b64(image) for image in maps], "info": "Success"}

    return r
