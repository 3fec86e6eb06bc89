"""What an img2img job decides before any image or model is touched: sampler, steps, noise, batch size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modules.engine.requests import Img2ImgRequest
from modules.engine.samplers import resolve_sampler
from modules.errors import UserError

if TYPE_CHECKING:
    from modules.engine.engine import Engine
    from modules.engine.img2img.canvas import Canvas, Note


@dataclass(frozen=True)
class Plan:
    choice: Any
    steps: int  # sampling steps that really run; 0 at denoising strength 0, where nothing is sampled
    strength: float  # the strength diffusers gets, so that it runs exactly `steps` of request.steps
    noise_multiplier: float

    @property
    def conditioning_steps(self) -> int:
        """Prompt editing ([a:b:0.5]) is scheduled over the steps that run."""
        return max(1, self.steps)


def make_plan(engine: Engine, request: Img2ImgRequest) -> Plan:
    choice = resolve_sampler(request.sampler_name, request.scheduler)
    engine.check_size(request.width, request.height)
    denoise = request.denoising_strength
    steps = int(request.steps * denoise)  # diffusers' count, as A1111's int(steps * denoising)
    strength = denoise
    if denoise > 0 and steps == 0:
        # A strength too small for one step would make diffusers refuse; A1111 still takes its last step.
        steps = 1
        strength = min(1.0, 1.5 / request.steps)
    multiplier = request.initial_noise_multiplier
    if multiplier is None:
        multiplier = float(setting(engine, "initial_noise_multiplier", 1.0))
    return Plan(choice, steps, strength, multiplier)


def batch_for(request: Img2ImgRequest, canvases: list[Canvas], note: Note) -> Img2ImgRequest:
    """One init image fills the whole batch; several make one batch holding each once (A1111 sets its batch
    size to the number of images; we also accept more images than batch_size rather than fail)."""
    count = len(canvases)
    if count in (1, request.batch_size):
        return request
    note(f"{count} init images were given with batch size {request.batch_size}: each batch holds the {count} "
         "images once.")
    return request.model_copy(update={"batch_size": count})


def check_canvases(engine: Engine, canvases: list[Canvas]) -> None:
    """Latent upscale encodes at the image's own size, which must fit the size limit too."""
    for canvas in canvases:
        engine.check_size(*canvas.pixels.size)


def setting(engine: Engine, key: str, default: Any) -> Any:
    """A setting this install may not register (A1111 has it); its A1111 default then."""
    try:
        value = engine.settings_get(key)
    except (KeyError, UserError):
        return default
    return default if value is None else value
