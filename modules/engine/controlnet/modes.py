"""sd-webui-controlnet's control modes, applied to ControlNet outputs.

- "Balanced": each output of the ControlNet (one per UNet down block, then the middle block) is scaled by the
  unit's weight and added to both halves of the classifier-free-guidance batch. This is plain diffusers.
- "My prompt is more important": soft injection. The outputs are scaled by 0.825 ** (12 - i) for output i of 13
  (an SDXL ControlNet, with 10 outputs, takes the first 10 of those factors, as the extension does): the deep,
  coarse layers keep most of their strength, the fine early ones little, so the prompt shapes the detail.
- "ControlNet is more important": the same soft scales, and the control goes to the conditional half of the batch
  only. The unconditional prediction then carries no control, so classifier-free guidance pushes toward it as
  hard as toward the prompt. (diffusers' `guess_mode` is the same idea, with log-spaced scales, for every net.)

diffusers runs several ControlNets through `MultiControlNetModel`, which applies one mode to all of them. The
subclass here keeps a mode per net and scales each net's outputs before summing. It is a `MultiControlNetModel`,
so the ControlNet pipelines treat it as theirs. A net whose scale is 0 at a step (outside its guidance range, or
weight 0) is not run at all.

The hires pass of txt2img uses soft injection for canny and mlsd units even in "Balanced" mode: sd-webui-controlnet
does so because thin hard edges upscaled to the hires size otherwise print artefacts into the image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SOFT_BASE = 0.825
SOFT_LAYERS = 13  # an SD 1.x/2.x ControlNet's outputs: 12 down-block residuals and the middle block


@dataclass(frozen=True)
class Injection:
    """How one net's outputs are applied: soft per-layer scales, and whether only the conditional half gets them."""

    soft: bool = False
    cond_only: bool = False

    @property
    def plain(self) -> bool:
        return not self.soft and not self.cond_only


def injection_for(control_mode: str, hires_pass: bool = False, module: str = "") -> Injection:
    """The injection sd-webui-controlnet uses for a unit's mode (and, in the hires pass, its module)."""
    if control_mode == "ControlNet is more important":
        return Injection(soft=True, cond_only=True)
    if control_mode == "My prompt is more important":
        return Injection(soft=True)
    forced = hires_pass and ("canny" in module or "mlsd" in module)
    return Injection(soft=forced)


def soft_scales(outputs: int) -> list[float]:
    """Per-output factors for soft injection: 0.825 ** (12 - i), the first `outputs` of them."""
    return [SOFT_BASE ** float(SOFT_LAYERS - 1 - i) for i in range(SOFT_LAYERS)][:outputs]


def build_multi(nets: list[Any], injections: list[Injection]) -> Any:
    """A `MultiControlNetModel` that applies each net's injection (see the module docstring)."""
    return _moded_class()(nets, injections)


@functools.cache
def _moded_class() -> type:
    """The class, made on first use so that importing this module does not import diffusers (nor torch)."""
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    class ModedControlNets(MultiControlNetModel):
        """Several ControlNets, each with its own control mode."""

        def __init__(self, controlnets: list[Any], modes: list[Injection]) -> None:
            super().__init__(controlnets)
            self.injections = list(modes)
            self.images_per_batch = 0  # set per call by the plan: tells the CFG halves apart

        def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor,
                    controlnet_cond: list[torch.Tensor], conditioning_scale: list[float], class_labels: Any = None,
                    timestep_cond: Any = None, attention_mask: Any = None, added_cond_kwargs: Any = None,
                    cross_attention_kwargs: Any = None, guess_mode: bool = False,
                    return_dict: bool = True) -> tuple[Any, Any]:
            down_total: list[torch.Tensor] | None = None
            mid_total: torch.Tensor | None = None
            for image, scale, net, injection in zip(controlnet_cond, conditioning_scale, self.nets, self.injections,
                                                    strict=True):
                if float(scale) == 0.0:
                    continue
                down, mid = net(sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states,
                                controlnet_cond=image, conditioning_scale=scale, class_labels=class_labels,
                                timestep_cond=timestep_cond, attention_mask=attention_mask,
                                added_cond_kwargs=added_cond_kwargs, cross_attention_kwargs=cross_attention_kwargs,
                                guess_mode=guess_mode, return_dict=False)
                down, mid = _inject(list(down), mid, injection, sample.shape[0], self.images_per_batch)
                if down_total is None or mid_total is None:
                    down_total, mid_total = down, mid
                else:
                    down_total = [a + b for a, b in zip(down_total, down, strict=True)]
                    mid_total = mid_total + mid
            # Nothing ran (every net outside its guidance range): the UNet then runs without residuals.
            return down_total, mid_total  # type: ignore[return-value]

    return ModedControlNets


def _inject(down: list[torch.Tensor], mid: torch.Tensor, injection: Injection, rows: int,
            images: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    if injection.soft:
        scales = soft_scales(len(down) + 1)
        down = [d * s for d, s in zip(down, scales[:-1], strict=True)]
        mid = mid * scales[-1]
    if injection.cond_only and images and rows == 2 * images:
        # diffusers stacks the batch as [unconditional, conditional]; keep the control on the second half only.
        import torch

        mask = torch.cat([torch.zeros(images), torch.ones(images)]).to(device=mid.device, dtype=mid.dtype)
        mask = mask.view(-1, 1, 1, 1)
        down = [d * mask for d in down]
        mid = mid * mask
    return down, mid


def is_moded(controlnet: Any) -> bool:
    return hasattr(controlnet, "injections") and hasattr(controlnet, "images_per_batch")
