"""GET lists of /sdapi/v1 in A1111 1.10 shapes: samplers, schedulers, upscalers, models, VAEs, LoRAs, embeddings,
styles, scripts. Listing never reads a model file whole: hashes come from the hash cache only, as A1111's
checkpoint list does; a file not hashed yet has `hash: null` and a title without brackets.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter

from modules.api.sdapi.models import (
    LatentUpscalerModeItem,
    LoraItem,
    PromptStyleItem,
    ScriptsList,
    SDModelItem,
    SDVaeItem,
    UpscalerItem,
)
from modules.api.sdapi.scripts import builtin_titles
from modules.engine import hires
from modules.engine.lora_files import file_metadata
from modules.engine.samplers import list_samplers, list_schedulers
from modules.model_registry import ModelFile, ModelRegistry
from modules.services import Services

CHECKPOINTS = "Stable-diffusion"


def checkpoint_title(registry: ModelRegistry, model: ModelFile) -> str:
    """A1111's title, `"<name with extension> [<10-hex hash>]"`, from cached hashes only."""
    short = registry.shorthash(model, compute=False)
    return f"{model.relative_filename} [{short}]" if short else model.relative_filename


def sd_model_item(registry: ModelRegistry, model: ModelFile) -> SDModelItem:
    short = registry.shorthash(model, compute=False)
    return SDModelItem(
        title=checkpoint_title(registry, model),
        # A1111's model_name: the name with folders joined by "_", without extension.
        model_name=os.path.splitext(model.relative_filename.replace("/", "_"))[0] if not model.is_dir
        else model.name.replace("/", "_"),
        hash=short,
        sha256=registry.sha256(model) if short else None,  # cached when the short hash is
        filename=str(model.filename),
        config=None,
    )


def router(services: Services) -> APIRouter:
    r = APIRouter()
    registry = services.models
    engine = services.engine

    @r.get("/samplers")
    def samplers() -> list[dict[str, Any]]:
        return list_samplers()

    @r.get("/schedulers")
    def schedulers() -> list[dict[str, Any]]:
        return list_schedulers()

    @r.get("/upscalers", response_model=list[UpscalerItem])
    def upscalers() -> list[UpscalerItem]:
        """"None", Lanczos, Nearest and every model upscaler, as A1111 lists them."""
        return [UpscalerItem(**item) for item in services.engine.upscalers.api_list()]

    @r.get("/latent-upscale-modes", response_model=list[LatentUpscalerModeItem])
    def latent_upscale_modes() -> list[LatentUpscalerModeItem]:
        return [LatentUpscalerModeItem(name=name) for name in hires.LATENT_MODES]

    @r.get("/sd-models", response_model=list[SDModelItem])
    def sd_models() -> list[SDModelItem]:
        return [sd_model_item(registry, m) for m in registry.list(CHECKPOINTS)]

    @r.get("/sd-vae", response_model=list[SDVaeItem])
    def sd_vae() -> list[SDVaeItem]:
        return [SDVaeItem(model_name=m.relative_filename, filename=str(m.filename)) for m in registry.list("VAE")]

    @r.get("/loras", response_model=list[LoraItem])
    def loras() -> list[LoraItem]:
        """The Lora extension's list: name (file stem), alias (`ss_output_name`), path, safetensors metadata."""
        items = []
        for m in registry.list("Lora"):
            metadata = file_metadata(m.filename) if m.filename.suffix.lower() == ".safetensors" else {}
            items.append(LoraItem(name=m.basename, alias=metadata.get("ss_output_name") or m.basename,
                                  path=str(m.filename), metadata=metadata))
        return items

    @r.get("/embeddings")
    def embeddings() -> dict[str, dict[str, dict[str, Any]]]:
        """`{loaded, skipped}` for the loaded checkpoint; empty until a checkpoint has been loaded."""
        current = engine.checkpoints.current
        if current is not None:
            engine.embeddings.load_for(current.pipe)
        return engine.embeddings.api_listing()

    @r.get("/prompt-styles", response_model=list[PromptStyleItem])
    def prompt_styles() -> list[PromptStyleItem]:
        return [PromptStyleItem(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt)
                for s in engine.styles.all()]

    @r.get("/hypernetworks")
    def hypernetworks() -> list[dict[str, Any]]:
        """Hypernetworks are not supported, so there are none."""
        return []

    @r.get("/face-restorers")
    def face_restorers() -> list[dict[str, Any]]:
        """A1111's list: `{name, cmd_dir}` for each face restorer (GFPGAN, CodeFormer) that can run here."""
        return engine.face_restorers.api_list()

    @r.get("/realesrgan-models")
    def realesrgan_models() -> list[dict[str, Any]]:
        return []

    @r.get("/scripts", response_model=ScriptsList)
    def scripts() -> ScriptsList:
        """A1111 lists script titles in lower case; ours are ControlNet's and the always-on scripts extensions
        registered, for both modes."""
        titles = sorted({*builtin_titles(), *services.extensions.alwayson_scripts()})
        return ScriptsList(txt2img=titles, img2img=titles)

    @r.get("/script-info")
    def script_info() -> list[dict[str, Any]]:
        return []

    return r
