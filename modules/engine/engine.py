"""The engine: the one object that runs generation jobs on the worker.

It is built at start-up without importing torch; the memory manager and the checkpoint cache import it the
first time a job needs them. The UI and the API never call it directly: they submit jobs.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.engine.controlnet.models import ControlNetCache
from modules.engine.embeddings import EmbeddingDatabase
from modules.engine.hires import hires_upscalers
from modules.engine.lora import LoraCache
from modules.engine.memory import MemoryConfig, MemoryManager
from modules.engine.model_cache import CheckpointCache
from modules.engine.outputs import ImageSaver
from modules.engine.postprocess import UpscalerRegistry
from modules.engine.postprocess.faces import FaceRestorers
from modules.engine.requests import Img2ImgBatchRequest, Img2ImgRequest, Txt2ImgRequest
from modules.engine.results import GenerationResult
from modules.engine.styles import StyleStore
from modules.engine.tokens import TokenCounter
from modules.errors import UserError
from modules.extensions.hooks import HookRegistry
from modules.jobs import JobContext
from modules.model_registry import ModelRegistry

if TYPE_CHECKING:
    from modules.access import AccessPolicy

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, args: argparse.Namespace, models: ModelRegistry, outputs: Path, cache: Path,
                 styles_file: Path, settings_get: Callable[[str], Any], hooks: HookRegistry) -> None:
        self.settings_get = settings_get
        self.models = models
        self.lora_cache = LoraCache()
        self.embeddings = EmbeddingDatabase(models)
        self.memory = MemoryManager(MemoryConfig.from_args(args, **self.memory_settings()))
        self.checkpoints = CheckpointCache(models, self.memory, cache,
                                           default=lambda: args.ckpt or settings_get("sd_model_checkpoint"),
                                           default_vae=lambda: settings_get("sd_vae"))
        self.saver = ImageSaver(outputs, settings_get, hooks)
        self.styles = StyleStore(styles_file)
        self.tokens = TokenCounter(cache, self._loaded_tokenizer)
        self.upscalers = UpscalerRegistry(models, self.memory)
        self.controlnets = ControlNetCache(models, self.memory, cache)  # loaded ControlNets and annotators
        self.face_restorers = FaceRestorers(models, self.memory, settings_get)
        self.last_step_seconds: float | None = None

    def memory_settings(self) -> dict[str, Any]:
        """The Optimizations settings, as MemoryConfig fields; read at every job so edits apply without a restart
        (torch.compile applies at the next checkpoint load)."""
        get = self.settings_get
        return {"vae_tiling": get("vae_tiling"), "vae_slicing": get("vae_slicing"),
                "attention_slicing": get("attention_slicing"), "channels_last": get("channels_last"),
                "tf32": get("tf32"), "compile": get("torch_compile")}

    def txt2img(self, request: Txt2ImgRequest, ctx: JobContext) -> GenerationResult:
        from modules.engine.txt2img import run_txt2img

        self.memory.reconfigure(self.memory.config.with_settings(**self.memory_settings()))
        self.check_work(request)
        return run_txt2img(self, request, ctx)

    def img2img(self, request: Img2ImgRequest, ctx: JobContext) -> GenerationResult:
        from modules.engine.img2img import run_img2img

        self.memory.reconfigure(self.memory.config.with_settings(**self.memory_settings()))
        self.check_work(request)
        return run_img2img(self, request, ctx)

    def img2img_batch(self, request: Img2ImgBatchRequest, ctx: JobContext,
                      access: AccessPolicy | None = None) -> GenerationResult:
        """`access`: the LAN rule for server folders, checked again here in case a caller skipped it."""
        from modules.engine.img2img import run_img2img_batch

        self.memory.reconfigure(self.memory.config.with_settings(**self.memory_settings()))
        self.check_work(request)
        return run_img2img_batch(self, request, ctx, access)

    def extras(self, request: Any, ctx: JobContext, access: AccessPolicy | None = None) -> Any:
        """Upscale and restore faces (the "extras" job): an `ExtrasRequest` in, an `ExtrasResult` out. `access`:
        the LAN rule for a server folder, checked again here since the job API can submit one directly."""
        from modules.engine.extras.run import run_extras

        return run_extras(self, request, ctx, access)

    def _loaded_tokenizer(self) -> Any:
        current = self.checkpoints.current
        return current.pipe.tokenizer if current is not None else None

    def hires_upscalers(self) -> list[str]:
        return hires_upscalers(self.upscalers.model_names())

    def upscaler_tiling(self) -> tuple[int, int]:
        return int(self.settings_get("upscaler_tile_size")), int(self.settings_get("upscaler_tile_overlap"))

    def preview_every(self) -> int:
        return int(self.settings_get("show_progress_every_n_steps"))

    def check_work(self, request: Txt2ImgRequest | Img2ImgRequest) -> None:
        """The `max_job_steps` setting: refuse, before any model loads, a request that would sample too long."""
        limit = int(self.settings_get("max_job_steps"))
        steps = request.steps
        if isinstance(request, Txt2ImgRequest) and request.enable_hr:
            steps += request.hr_second_pass_steps or request.steps
        total = steps * request.batch_size * request.n_iter
        if limit and total > limit:
            raise UserError(f"this request would run {total} sampling steps (steps x batch size x batch count, "
                            f"hires pass included), over the limit of {limit} (setting 'max_job_steps'); ask for "
                            "fewer steps or images", field="steps")

    def check_size(self, width: int, height: int) -> None:
        limit = int(self.settings_get("max_image_pixels"))
        if width * height > limit:
            raise UserError(f"{width}x{height} is over the size limit of {limit} pixels (setting "
                            f"'max_image_pixels'); use a smaller size or hires fix", field="width")
