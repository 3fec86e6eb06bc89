"""diffusers → A1111/LDM single-file conversion for SD 1.x, SD 2.x and SDXL (UNet, VAE, text encoders).

diffusers only ships the other direction (`loaders/single_file_utils`). This one backs "save checkpoint" and
builds the single-file tiny test models. The block layout is computed from each model's config (number of
levels, `layers_per_block`, which up blocks have attention), not hard-coded to SD 1.5's 4×2, so it handles
SD1/SD2 (4 levels) and SDXL (3 levels, deep transformers) alike, and any tiny model with the same block types.

LDM layout in short: the UNet is a flat list of `input_blocks` (conv_in, then per level `layers_per_block`
resnet(+attention) blocks and a downsampler), a `middle_block` and `output_blocks` (per level
`layers_per_block + 1` blocks, the last with the upsampler). Attention internals keep their diffusers names.

Text encoders: SD1 and SDXL's first encoder keep the Hugging Face CLIP layout under
`cond_stage_model.transformer.text_model.*` / `conditioner.embedders.0.transformer.text_model.*` (transformers 5
dropped the `text_model.` prefix from `CLIPTextModel.state_dict()`, so it is added back). SD2 and SDXL's second
encoder use OpenCLIP's layout (`cond_stage_model.model.*` / `conditioner.embedders.1.model.*`): fused
`in_proj` attention weights, `resblocks`, `ln_final`, and a transposed `text_projection`. diffusers' SD 2.x text
encoder has 23 layers (the 24th is never used: SD2 conditions on the penultimate layer), so a saved SD2 file has
23 resblocks where Stability's has 24. diffusers loads it as is; a loader that insists on every LDM key (strict
loading) would miss that unused last layer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TEXT2_PREFIX = "conditioner.embedders.1.model."


def _uniform_layers(config: Mapping[str, Any]) -> int:
    layers = config["layers_per_block"]
    if isinstance(layers, int):
        return layers
    if len(set(layers)) == 1:
        return int(layers[0])
    raise ValueError(f"per-level layers_per_block {layers} has no LDM single-file equivalent")


def _rename(key: str, prefix_map: Mapping[str, str], max_parts: int = 5) -> tuple[str, str, str] | None:
    """Find the longest mapped prefix of `key` (in dotted parts); return (diffusers prefix, LDM prefix, rest)."""
    parts = key.split(".")
    for count in range(min(max_parts, len(parts) - 1), 0, -1):
        prefix = ".".join(parts[:count])
        if prefix in prefix_map:
            return prefix, prefix_map[prefix], ".".join(parts[count:])
    return None


def _unet_prefix_map(config: Mapping[str, Any]) -> dict[str, str]:
    levels = len(config["block_out_channels"])
    layers = _uniform_layers(config)
    stride = layers + 1  # LDM gives each level one extra slot: the downsampler (input) / extra resnet (output)
    mapping = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",  # SDXL's size/crop conditioning ("text_time")
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
    }
    for level in range(levels):
        for layer in range(layers):
            index = 1 + level * stride + layer
            mapping[f"down_blocks.{level}.resnets.{layer}"] = f"input_blocks.{index}.0"
            mapping[f"down_blocks.{level}.attentions.{layer}"] = f"input_blocks.{index}.1"
        for layer in range(stride):
            index = level * stride + layer
            mapping[f"up_blocks.{level}.resnets.{layer}"] = f"output_blocks.{index}.0"
            mapping[f"up_blocks.{level}.attentions.{layer}"] = f"output_blocks.{index}.1"
        if level < levels - 1:  # the deepest level neither downsamples nor (on the way up) upsamples
            mapping[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{1 + level * stride + layers}.0.op"
            has_attention = str(config["up_block_types"][level]).startswith("CrossAttn")
            # The upsampler follows the resnet, and the attention if the block has one.
            upsampler_slot = 2 if has_attention else 1
            mapping[f"up_blocks.{level}.upsamplers.0"] = f"output_blocks.{level * stride + layers}.{upsampler_slot}"
    return mapping


_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Rename a `UNet2DConditionModel` state dict to LDM keys (without the `model.diffusion_model.` prefix)."""
    prefix_map = _unet_prefix_map(config)
    converted: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in state.items():
        found = _rename(key, prefix_map)
        if found is None:
            unmapped.append(key)
            continue
        source_prefix, target_prefix, rest = found
        if ".resnets." in source_prefix:
            head, _, tail = rest.partition(".")
            rest = f"{_UNET_RESNET_PARTS.get(head, head)}.{tail}"
        converted[f"{target_prefix}.{rest}"] = value
    if unmapped:
        raise ValueError(f"UNet keys with no LDM equivalent (unsupported block type?): {unmapped[:5]}")
    return converted


def _vae_prefix_map(config: Mapping[str, Any]) -> dict[str, str]:
    levels = len(config["block_out_channels"])
    layers = _uniform_layers(config)
    mapping = {name: name for name in ("encoder.conv_in", "encoder.conv_out", "decoder.conv_in", "decoder.conv_out",
                                       "quant_conv", "post_quant_conv")}
    mapping["encoder.conv_norm_out"] = "encoder.norm_out"
    mapping["decoder.conv_norm_out"] = "decoder.norm_out"
    for level in range(levels):
        for layer in range(layers):
            mapping[f"encoder.down_blocks.{level}.resnets.{layer}"] = f"encoder.down.{level}.block.{layer}"
        mapping[f"encoder.down_blocks.{level}.downsamplers.0"] = f"encoder.down.{level}.downsample"
        # The LDM decoder numbers its levels from the lowest resolution up; diffusers from the top down.
        ldm_level = levels - 1 - level
        for layer in range(layers + 1):
            mapping[f"decoder.up_blocks.{level}.resnets.{layer}"] = f"decoder.up.{ldm_level}.block.{layer}"
        mapping[f"decoder.up_blocks.{level}.upsamplers.0"] = f"decoder.up.{ldm_level}.upsample"
    for part in ("encoder", "decoder"):
        mapping[f"{part}.mid_block.resnets.0"] = f"{part}.mid.block_1"
        mapping[f"{part}.mid_block.resnets.1"] = f"{part}.mid.block_2"
        mapping[f"{part}.mid_block.attentions.0"] = f"{part}.mid.attn_1"
    return mapping


_VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Rename an `AutoencoderKL` state dict to LDM keys (without the `first_stage_model.` prefix).

    The mid-block attention is linear in diffusers (`to_q`...`to_out.0`) and 1×1 convolutions in LDM
    (`q`...`proj_out`), so those weights gain two trailing unit dimensions.
    """
    prefix_map = _vae_prefix_map(config)
    converted: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in state.items():
        found = _rename(key, prefix_map)
        if found is None:
            unmapped.append(key)
            continue
        source_prefix, target_prefix, rest = found
        if ".resnets." in source_prefix:
            rest = rest.replace("conv_shortcut", "nin_shortcut")
        elif source_prefix.endswith("attentions.0"):
            for old, new in _VAE_ATTENTION_PARTS.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old):]
                    break
            if rest.endswith("weight") and value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)
        converted[f"{target_prefix}.{rest}"] = value
    if unmapped:
        raise ValueError(f"VAE keys with no LDM equivalent: {unmapped[:5]}")
    return converted


def clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Hugging Face CLIP text model → `<prefix>text_model.*` (SD1, SDXL's first encoder); projection dropped."""
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("text_projection") or key.endswith("position_ids"):
            continue  # unused by SD; position_ids is a constant buffer that loaders recreate
        converted[prefix + ("" if key.startswith("text_model.") else "text_model.") + key] = value
    return converted


_OPEN_CLIP_LAYER_PARTS = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def open_clip_to_ldm(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Hugging Face CLIP text model → OpenCLIP layout under `prefix` (SD2, SDXL's second encoder)."""
    import torch

    converted: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for full_key, value in state.items():
        key = full_key.removeprefix("text_model.")
        if key == "embeddings.token_embedding.weight":
            converted[prefix + "token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            converted[prefix + "positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            converted[prefix + "ln_final." + key.removeprefix("final_layer_norm.")] = value
        elif key == "text_projection.weight":
            converted[prefix + "text_projection"] = value.T.contiguous()  # OpenCLIP multiplies from the right
        elif key.startswith("encoder.layers."):
            index, _, rest = key.removeprefix("encoder.layers.").partition(".")
            block = f"{prefix}transformer.resblocks.{index}."
            if rest.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
                projection, kind = rest.split(".")[1], rest.rsplit(".", 1)[1]  # ("q_proj", "weight")
                qkv.setdefault((block, kind), {})[projection] = value
                continue
            for old, new in _OPEN_CLIP_LAYER_PARTS.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old):]
                    break
            else:
                raise ValueError(f"unexpected text encoder key {full_key}")
            converted[block + rest] = value
        elif not key.endswith("position_ids"):
            raise ValueError(f"unexpected text encoder key {full_key}")
    for (block, kind), parts in qkv.items():
        # OpenCLIP's nn.MultiheadAttention stores q, k and v stacked in one in_proj tensor.
        converted[f"{block}attn.in_proj_{kind}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return converted


def _uses_open_clip(text_encoder: Any) -> bool:
    # OpenCLIP text towers use exact GELU; OpenAI's CLIP-L uses quick_gelu. That is the one architectural
    # difference in the HF config between SD1's and SD2's text encoders, and it holds for tiny test models too.
    return getattr(text_encoder.config, "hidden_act", "quick_gelu") != "quick_gelu"


def pipeline_to_ldm(pipe: Any) -> dict[str, torch.Tensor]:
    """The whole A1111/LDM state dict of an SD1/SD2/SDXL pipeline (UNet, VAE, text encoders)."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config).items():
        tensors[UNET_PREFIX + key] = value
    for key, value in vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config).items():
        tensors[VAE_PREFIX + key] = value
    text_encoder_2 = getattr(pipe, "text_encoder_2", None)
    if text_encoder_2 is not None:
        tensors.update(clip_to_ldm(pipe.text_encoder.state_dict(), SDXL_TEXT_PREFIX))
        tensors.update(open_clip_to_ldm(text_encoder_2.state_dict(), SDXL_TEXT2_PREFIX))
    elif _uses_open_clip(pipe.text_encoder):
        tensors.update(open_clip_to_ldm(pipe.text_encoder.state_dict(), SD2_TEXT_PREFIX))
    else:
        tensors.update(clip_to_ldm(pipe.text_encoder.state_dict(), SD1_TEXT_PREFIX))
    return tensors


def save_ldm_checkpoint(
    pipe: Any, path: Path, dtype: torch.dtype | None = None, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write `pipe` as an A1111-style single-file `.safetensors` checkpoint, atomically.

    Args:
        pipe: A Stable Diffusion (1.x/2.x) or SDXL pipeline.
        path: The destination; its folder is created. An existing file is replaced only once the new one is whole.
        dtype: Cast floating-point tensors (e.g. `torch.float16` to halve the size); None keeps them as they are.
        metadata: String key/values for the safetensors header.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for key, value in pipeline_to_ldm(pipe).items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        # clone(): safetensors refuses tensors that share storage, which reshaped/transposed views can do.
        tensors[key] = value.contiguous().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, temporary, metadata=dict(metadata or {"format": "pt"}))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
