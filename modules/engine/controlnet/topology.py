"""What a ControlNet file is, read off its tensor names and shapes: the family it was trained for (SD 1.x, SD 2.x,
SDXL) and the diffusers `ControlNetModel` config that fits its weights.

ControlNets ship in two key layouts:

- lllyasviel's original one (`input_blocks.*`, `zero_convs.*`, `input_hint_block.*`, `middle_block_out.*`),
  with a `control_model.` prefix or without it: the SD 1.5 and SD 2.1 releases;
- diffusers' (`down_blocks.*`, `controlnet_down_blocks.*`, `controlnet_cond_embedding.*`): most SDXL releases,
  as single files or as diffusers folders.

diffusers' `from_single_file` converts either layout, but needs a config; the hub is where it would look. The
config is derived here instead, so any size loads offline (the tiny test models included). Two numbers cannot
be read off the weights, and take the released models' values: the attention head count (SD 1.x: 8 heads; SD
2.x and SDXL: 64 channels per head) and SDXL's time-embedding width (256). A file whose sizes do not fit those
needs its diffusers `config.json` in a `<name>/` folder beside it. `global_pool_conditions` (the shuffle model)
comes from the `<name>.yaml` lllyasviel ships beside each model, or from "shuffle" in the name.

Family: an SDXL-style size/crop embedding (`label_emb` / `add_embedding`) means SDXL; otherwise a cross-attention
width of 1024 means SD 2.x, anything else SD 1.x.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modules.errors import UserError

TensorShapes = Mapping[str, tuple[int, ...]]
Layout = Literal["ldm", "diffusers"]

LDM_PREFIX = "control_model."
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
SDXL_TIME_EMBED_DIM = 256  # SDXL's size/crop Fourier features; with the 1280-wide pooled text: 6 * 256 + 1280
SDXL_POOLED_DIM = 1280


@dataclass(frozen=True)
class ControlNetTopology:
    """A ControlNet's family, key layout, and the diffusers config that fits its weights."""

    family: Literal["sd1", "sd2", "sdxl"]
    layout: Layout
    config: dict[str, Any]
    reason: str  # how the family was decided, for logs and messages
    unsure: str | None = None  # why `config` may not fit: the file then needs its own config.json beside it


def base_family(family: str) -> str:
    """"sd1-inpaint" -> "sd1", "sd2-v" -> "sd2": the part a ControlNet has to match."""
    return family.split("-", 1)[0]


def family_label(family: str) -> str:
    """"SD 1.x", "SD 2.x" or "SDXL" for a checkpoint or ControlNet family."""
    base = base_family(family)
    return FAMILY_LABELS.get(base, base)


def strip_prefix(shapes: TensorShapes) -> TensorShapes:
    """The ControlNet's own keys: lllyasviel's full-model files also hold a whole SD model beside `control_model.`."""
    if any(key.startswith(LDM_PREFIX) for key in shapes):
        return {key[len(LDM_PREFIX):]: shape for key, shape in shapes.items() if key.startswith(LDM_PREFIX)}
    return shapes


def layout_of(shapes: TensorShapes) -> Layout | None:
    """The key layout of (prefix-stripped) ControlNet weights, or None when they are not a ControlNet."""
    if "input_hint_block.0.weight" in shapes and "input_blocks.0.0.weight" in shapes:
        return "ldm"
    if "controlnet_cond_embedding.conv_in.weight" in shapes and "conv_in.weight" in shapes:
        return "diffusers"
    return None


def not_a_controlnet(shapes: TensorShapes, name: str) -> UserError:
    """The message for a file in models/ControlNet that is something else."""
    from modules.engine.models.families import describe_non_sd

    keys = list(shapes)
    if any("lora_controlnet" in key for key in keys):
        what = "a Control-LoRA, which is not supported yet"
    elif any(key.startswith(("adapter.", "body.0.")) for key in keys):
        what = "a T2I-Adapter, which is not supported yet"
    elif any(key.startswith("model.diffusion_model.") for key in keys):
        what = "a Stable Diffusion checkpoint; put it in models/Stable-diffusion"
    else:
        what = describe_non_sd(shapes)
    return UserError(f"{name} is not a ControlNet model: it looks like {what}.", field="controlnet")


def topology_from_shapes(shapes: TensorShapes, name: str, global_pool: bool = False) -> ControlNetTopology:
    """Family and diffusers config of a single-file ControlNet, from its tensor shapes.

    Raises:
        UserError: not a ControlNet (the message says what it looks like).
    """
    own = strip_prefix(shapes)
    layout = layout_of(own)
    if layout is None:
        raise not_a_controlnet(shapes, name)
    parts = _ldm_parts(own) if layout == "ldm" else _diffusers_parts(own)
    family, reason = _family(parts["context"], parts["addition_dim"])
    config, unsure = _config(parts, family, global_pool)
    return ControlNetTopology(family, layout, config, reason, unsure)


def family_from_config(config: Mapping[str, Any]) -> tuple[Literal["sd1", "sd2", "sdxl"], str]:
    """Family of a diffusers folder's ControlNet, from its config.json."""
    addition = config.get("projection_class_embeddings_input_dim") if config.get("addition_embed_type") else None
    return _family(config.get("cross_attention_dim"), addition)


def _family(context: int | None, addition_dim: int | None) -> tuple[Literal["sd1", "sd2", "sdxl"], str]:
    if addition_dim:
        return "sdxl", "size/crop embedding (SDXL)"
    if context == 1024:
        return "sd2", "cross-attention context 1024"
    return "sd1", f"cross-attention context {context}"


def _indices(shapes: TensorShapes, pattern: str) -> set[int]:
    """The integers `{n}` that `pattern` (a regex with one group) captures over every key."""
    regex = re.compile(pattern)
    return {int(m.group(1)) for key in shapes if (m := regex.match(key))}


def _context(shapes: TensorShapes, prefix: str) -> tuple[int | None, bool | None]:
    """(cross-attention width, linear projections?) from the first attention under `prefix`."""
    context = linear = None
    for key, shape in shapes.items():
        if not key.startswith(prefix):
            continue
        if key.endswith("attn2.to_k.weight") and context is None:
            context = shape[1]
        if key.endswith("proj_in.weight") and linear is None:
            linear = len(shape) == 2  # SD 2.x and SDXL project with Linear layers, SD 1.x with 1x1 convs
    return context, linear


def _hint_channels(shapes: TensorShapes, conv_in: str, blocks: list[str]) -> list[int]:
    """The hint encoder's widths: conv_in's, then the second conv of each pair (each pair steps the width up)."""
    return [shapes[conv_in][0]] + [shapes[block][0] for block in blocks[1::2]]


def _ldm_parts(shapes: TensorShapes) -> dict[str, Any]:
    count = max(_indices(shapes, r"input_blocks\.(\d+)\.")) + 1
    downsamplers = sorted(_indices(shapes, r"input_blocks\.(\d+)\.0\.op\.weight$"))
    levels = len(downsamplers) + 1
    layers = (count - 1 - len(downsamplers)) // levels
    channels, attention, depth = [], [], []
    for level in range(levels):
        first = 1 + level * (layers + 1)
        channels.append(shapes[f"input_blocks.{first}.0.out_layers.3.weight"][0])
        attention.append(any(k.startswith(f"input_blocks.{first}.1.") for k in shapes))
        depth.append(len(_indices(shapes, rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\.")))
    context, linear = _context(shapes, "input_blocks.")
    if context is None:
        context, linear = _context(shapes, "middle_block.")
    label = shapes.get("label_emb.0.0.weight")
    hint = _indices(shapes, r"input_hint_block\.(\d+)\.weight$")
    return {
        "in_channels": shapes["input_blocks.0.0.weight"][1],
        "conditioning_channels": shapes["input_hint_block.0.weight"][1],
        # input_hint_block: conv_in at 0, the pairs at 2, 4, ..., conv_out last (each conv followed by a SiLU)
        "hint": _hint_channels(shapes, "input_hint_block.0.weight",
                               [f"input_hint_block.{i}.weight" for i in sorted(hint)[1:-1]]),
        "channels": channels, "attention": attention, "depth": depth, "layers": layers,
        "mid_attention": any(k.startswith("middle_block.1.") for k in shapes),
        "context": context, "linear": linear,
        "addition_dim": label[1] if label else None,
    }


def _diffusers_parts(shapes: TensorShapes) -> dict[str, Any]:
    levels = max(_indices(shapes, r"down_blocks\.(\d+)\.")) + 1
    layers = len(_indices(shapes, r"down_blocks\.0\.resnets\.(\d+)\."))
    channels, attention, depth = [], [], []
    for level in range(levels):
        channels.append(shapes[f"down_blocks.{level}.resnets.0.conv2.weight"][0])
        attention.append(any(k.startswith(f"down_blocks.{level}.attentions.") for k in shapes))
        depth.append(len(_indices(shapes, rf"down_blocks\.{level}\.attentions\.0\.transformer_blocks\.(\d+)\.")))
    context, linear = _context(shapes, "down_blocks.")
    if context is None:
        context, linear = _context(shapes, "mid_block.")
    addition = shapes.get("add_embedding.linear_1.weight")
    hint = _indices(shapes, r"controlnet_cond_embedding\.blocks\.(\d+)\.weight$")
    return {
        "in_channels": shapes["conv_in.weight"][1],
        "conditioning_channels": shapes["controlnet_cond_embedding.conv_in.weight"][1],
        "hint": _hint_channels(shapes, "controlnet_cond_embedding.conv_in.weight",
                               [f"controlnet_cond_embedding.blocks.{i}.weight" for i in sorted(hint)]),
        "channels": channels, "attention": attention, "depth": depth, "layers": layers,
        "mid_attention": any(k.startswith("mid_block.attentions.") for k in shapes),
        "context": context, "linear": linear,
        "addition_dim": addition[1] if addition else None,
    }


def _config(parts: Mapping[str, Any], family: str, global_pool: bool) -> tuple[dict[str, Any], str | None]:
    channels: list[int] = parts["channels"]
    if family == "sd1":
        heads: int | list[int] = 8
    else:
        heads = [max(1, c // 64) for c in channels]
    addition_dim = parts["addition_dim"]
    time_dim, unsure = None, None
    if addition_dim:
        time_dim = SDXL_TIME_EMBED_DIM
        if addition_dim != 6 * SDXL_TIME_EMBED_DIM + SDXL_POOLED_DIM:
            unsure = f"its SDXL size embedding has an unusual width ({addition_dim})"
    depth = [d if a else 1 for d, a in zip(parts["depth"], parts["attention"], strict=True)]
    config = {
        "_class_name": "ControlNetModel",
        "in_channels": parts["in_channels"],
        "conditioning_channels": parts["conditioning_channels"],
        "conditioning_embedding_out_channels": list(parts["hint"]),
        "block_out_channels": channels,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in parts["attention"]],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if parts["mid_attention"] else "UNetMidBlock2D",
        "layers_per_block": parts["layers"],
        "transformer_layers_per_block": depth,
        "cross_attention_dim": parts["context"] or 768,
        "attention_head_dim": heads,
        "use_linear_projection": bool(parts["linear"]),
        "addition_embed_type": "text_time" if addition_dim else None,
        "addition_time_embed_dim": time_dim,
        "projection_class_embeddings_input_dim": addition_dim,
        "global_pool_conditions": global_pool,
        "controlnet_conditioning_channel_order": "rgb",
    }
    return config, unsure
