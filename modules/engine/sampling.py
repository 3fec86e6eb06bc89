"""What every generation mode shares around a diffusers call: prompt conditioning (styles, LoRA, textual
inversion, prompt editing), the per-step callback (progress, preview, interrupt/skip, conditioning switches),
and running a pipeline under the memory manager's OOM guard."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modules.engine.conditioning import PromptEncoder, ScheduledConditioning, padded
from modules.engine.lora import apply_loras, lora_hashes_infotext
from modules.engine.preview import latent_preview
from modules.engine.prompts import extract_extra_networks, remove_extra_networks
from modules.jobs import JobContext

if TYPE_CHECKING:
    from modules.engine.engine import Engine
    from modules.engine.model_cache import LoadedCheckpoint
    from modules.engine.requests import GenerationRequest

Conds = tuple[ScheduledConditioning, ScheduledConditioning]


@dataclass
class Prompts:
    """A request's prompts after styles, with their conditioning for `steps` sampling steps."""

    prompt: str  # after styles, as the infotext records it
    negative: str
    text: str  # without extra-network tags, as the text encoder sees it
    negative_text: str
    encoder: PromptEncoder
    conds: Conds
    loras: list[Any] = field(default_factory=list)

    def encode(self, prompt: str, negative: str, steps: int) -> Conds:
        """Conditioning for another prompt pair (hires prompts), padded to the same length."""
        import torch

        with torch.inference_mode():
            return padded([self.encoder.schedule(remove_extra_networks(prompt) or self.text, steps),
                           self.encoder.schedule(remove_extra_networks(negative) or self.negative_text, steps)],
                          self.encoder.empty())

    def extra_params(self, engine: Engine) -> dict[str, Any]:
        return {"Lora hashes": lora_hashes_infotext(self.loras),
                "TI hashes": engine.embeddings.ti_hashes_infotext(self.encoder.used_embeddings)}


@contextmanager
def prompt_conditioning(engine: Engine, model: LoadedCheckpoint, request: GenerationRequest,
                        steps: int) -> Iterator[Prompts]:
    """Styles, then extra networks: <lora:…> tags apply for the block and are removed afterwards; then the
    prompts become conditioning, one entry per prompt-editing step range (textual inversion included)."""
    import torch

    prompt, negative = engine.styles.apply(request.prompt, request.negative_prompt, request.styles)
    text, networks = extract_extra_networks(prompt)
    negative_text = remove_extra_networks(negative)
    with apply_loras(model.pipe, networks, engine.models, cache=engine.lora_cache, family=model.family) as loras:
        with torch.inference_mode():
            encoder = PromptEncoder(model.pipe, clip_skip=request.clip_skip, embeddings=engine.embeddings)
            conds = padded([encoder.schedule(text, steps), encoder.schedule(negative_text, steps)], encoder.empty())
        yield Prompts(prompt, negative, text, negative_text, encoder, conds, loras)


class Progress:
    """The step callback shared by every pass of a job: progress, preview, interrupt/skip, conditioning switches."""

    def __init__(self, ctx: JobContext, offset: int, total: int, sdxl: bool, preview_every: int) -> None:
        self.ctx, self.offset, self.total, self.sdxl = ctx, offset, total, sdxl
        self.every = max(1, preview_every)
        self.skipped = False

    def callback(self, engine: Engine, steps: int, conds: Conds, batch: int, label: str) -> Any:
        positive, negative = conds

        def on_step(pipe: Any, step_index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            self.ctx.check()
            engine.memory.check_allocation()
            self.offset += 1
            preview = latent_preview(kwargs["latents"], self.sdxl) if self.offset % self.every == 0 else None
            self.ctx.progress(self.offset, self.total, preview=preview, text=f"{label} {step_index + 1}/{steps}")
            if self.ctx.interrupted or self.ctx.take_skip():
                self.skipped = self.skipped or not self.ctx.interrupted
                pipe._interrupt = True
            if step_index + 1 < steps:
                kwargs["prompt_embeds"] = cfg_embeds(pipe, positive.at_step(step_index + 1),
                                                     negative.at_step(step_index + 1), batch)
            return kwargs

        return on_step

    def kwargs(self, engine: Engine, steps: int, conds: Conds, batch: int, label: str = "step") -> dict[str, Any]:
        """The callback keyword arguments for a pipeline call."""
        return {"callback_on_step_end": self.callback(engine, steps, conds, batch, label),
                "callback_on_step_end_tensor_inputs": ["latents", "prompt_embeds"]}


def run_pipe(engine: Engine, pipe: Any, kwargs: dict[str, Any]) -> Any:
    """`pipe(**kwargs).images` under the OOM guard, timing the steps for the ETA."""
    pipe._interrupt = False
    started = time.perf_counter()
    try:
        with engine.memory.oom_guard():
            return pipe(**kwargs).images
    finally:
        pipe._interrupt = False
        steps = kwargs.get("num_inference_steps") or 1
        engine.last_step_seconds = (time.perf_counter() - started) / steps


def embeds_kwargs(conds: Conds, batch: int, sdxl: bool) -> dict[str, Any]:
    pos, neg = conds[0].at_step(0), conds[1].at_step(0)
    kwargs: dict[str, Any] = {"prompt_embeds": pos.embeds.expand(batch, -1, -1),
                              "negative_prompt_embeds": neg.embeds.expand(batch, -1, -1)}
    if sdxl:
        kwargs["pooled_prompt_embeds"] = pos.pooled.expand(batch, -1)
        kwargs["negative_pooled_prompt_embeds"] = neg.pooled.expand(batch, -1)
    return kwargs


def cfg_embeds(pipe: Any, pos: Any, neg: Any, batch: int) -> Any:
    import torch

    pos_e, neg_e = pos.embeds.expand(batch, -1, -1), neg.embeds.expand(batch, -1, -1)
    return torch.cat([neg_e, pos_e]) if pipe.do_classifier_free_guidance else pos_e
