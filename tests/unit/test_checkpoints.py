"""Checkpoint detection and offline loading (modules.engine.models), with tiny random SD1/SD2/SDXL models.

Everything runs on the CPU in a tmp folder with HF_HUB_OFFLINE=1 (tests/conftest.py); the only files read from
outside the repo are open_clip's bundled BPE vocabulary and diffusers/transformers themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizer

from modules.engine.models import single_file
from modules.engine.models import tokenizers as tokenizers_module
from modules.engine.models.families import detect_checkpoint, detect_family
from modules.engine.models.family_config import ensure_family_config
from modules.engine.models.ldm_convert import save_ldm_checkpoint, unet_to_ldm, vae_to_ldm
from modules.engine.models.single_file import load_checkpoint, load_vae
from modules.errors import NotFound, UserError
from tests.fixtures.tiny_models import get_dummy_components, save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
ASTRONAUT_IDS = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 267, 279, 330, 49407]
LOADED_FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl")
DETECTED_FAMILIES = ("sd1", "sd1-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-inpaint")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    # A 2-core machine with another busy process makes multi-threaded torch ~30x slower (deps.md §3).
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app's cache root for this module: built tokenizers and assembled config folders."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict[str, Path]:
    """Each tiny family saved once as an A1111-layout single file (with its `<name>/` config folder beside it)."""
    folder = tmp_path_factory.mktemp("models")
    return {family: save_tiny_checkpoint(folder, family, cache_dir=cache) for family in DETECTED_FAMILIES}


def _assert_same_weights(expected: dict[str, Any], pipe: Any) -> None:
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if name not in expected:
            continue
        want, got = expected[name].state_dict(), getattr(pipe, name).state_dict()
        assert want.keys() == got.keys(), name
        different = [key for key in want if not torch.equal(want[key], got[key])]
        assert not different, f"{name}: {different[:3]}"


def _generate(pipe: Any, seed: int = 1) -> Any:
    generator = torch.Generator().manual_seed(seed)
    return pipe("a photo of an astronaut", num_inference_steps=2, height=64, width=64, generator=generator,
                output_type="np").images


def _write_state(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({key: torch.randn(shape) for key, shape in shapes.items()}, str(path))
    return path


# --- tokenizers and config folders ---------------------------------------------------------------------------


def test_family_config_builds_tokenizer_once_and_tokenizes_like_sd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = ensure_family_config("sd1", tmp_path)
    for required in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                     "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"):
        assert (folder / required).is_file(), required
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert tokenizer("a photo of an astronaut riding a horse, 8k").input_ids == ASTRONAUT_IDS
    assert tokenizer.pad_token == "<|endoftext|>"

    # Second call: nothing is rebuilt (the writer would raise), the same folder comes back.
    def must_not_run(*args: object) -> None:
        raise AssertionError("tokenizer rebuilt")

    monkeypatch.setattr(tokenizers_module, "_write_files", must_not_run)
    assert ensure_family_config("sd1", tmp_path) == folder
    monkeypatch.undo()

    # SD2 and SDXL's second tokenizer pad with "!" (id 0), and reuse the same vocabulary.
    sdxl = ensure_family_config("sdxl", tmp_path)
    second = CLIPTokenizer.from_pretrained(str(sdxl / "tokenizer_2"))
    assert (second.pad_token, second.pad_token_id) == ("!", 0)
    assert second("a photo of an astronaut riding a horse, 8k").input_ids == ASTRONAUT_IDS
    assert (sdxl / "text_encoder_2" / "config.json").is_file()


def test_import_and_safetensors_detection_do_not_import_torch(tmp_path: Path) -> None:
    # The web page is served before torch is imported, and the model list may show families by then.
    shapes = {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
              "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias": (8,),
              "cond_stage_model.model.token_embedding.weight": (10, 8)}
    path = _write_state(tmp_path / "sd2.safetensors", shapes)
    code = (
        "import sys\n"
        "import modules.engine.models.single_file, modules.engine.models.ldm_convert\n"
        "from modules.engine.models.families import detect_family\n"
        f"assert detect_family({str(path)!r}) in ('sd2', 'sd2-v')\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# --- family detection ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", DETECTED_FAMILIES)
def test_detects_each_tiny_family(models: dict[str, Path], family: str) -> None:
    info = detect_checkpoint(models[family])
    assert info.family == family
    assert info.prediction_type == ("v_prediction" if family == "sd2-v" else "epsilon")


def test_v_prediction_from_side_files_and_marker(models: dict[str, Path], tmp_path: Path) -> None:
    # Without its config folder the tiny SD2 file has nothing saying v-prediction: the weight heuristic sees
    # freshly initialised (zero) LayerNorm biases and says epsilon.
    bare = tmp_path / "bare.safetensors"
    shutil.copy(models["sd2"], bare)
    assert detect_family(bare) == "sd2"
    # A1111's rule: <name>.yaml with parameterization "v".
    bare.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    info = detect_checkpoint(bare)
    assert (info.family, info.original_config) == ("sd2-v", bare.with_suffix(".yaml"))
    # A v_pred marker tensor, as community v-prediction fine-tunes carry.
    shapes = {"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
              "cond_stage_model.model.token_embedding.weight": (10, 8), "v_pred": (1,)}
    assert detect_family(_write_state(tmp_path / "marked.safetensors", shapes)) == "sd2-v"


@pytest.mark.parametrize(("bias_std", "family"), [(0.0, "sd2"), (0.3, "sd2-v")])
def test_sd2_v_prediction_weight_heuristic(tmp_path: Path, bias_std: float, family: str) -> None:
    state = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3),
             "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias": torch.randn(320) * bias_std,
             "cond_stage_model.model.token_embedding.weight": torch.zeros(10, 8)}
    save_file(state, str(tmp_path / "probe.safetensors"))
    assert detect_family(tmp_path / "probe.safetensors") == family


def test_detects_diffusers_folder(tmp_path: Path, cache: Path) -> None:
    folder = save_tiny_checkpoint(tmp_path, "sd2-v", layout="diffusers", cache_dir=cache)
    info = detect_checkpoint(folder)
    assert (info.family, info.layout) == ("sd2-v", "diffusers")


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        ({"model.0.weight": (64, 3, 3, 3), "model.0.bias": (64,)}, "ESRGAN"),
        ({"lora_unet_down_blocks_0.lora_down.weight": (4, 320)}, "LoRA"),
        ({"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 4, 3, 3)}, "VAE"),
    ],
)
def test_non_sd_file_is_refused_with_what_it_looks_like(
    tmp_path: Path, cache: Path, shapes: dict[str, tuple[int, ...]], expected: str
) -> None:
    path = _write_state(tmp_path / "other.safetensors", shapes)
    with pytest.raises(UserError, match="not a Stable Diffusion checkpoint") as caught:
        load_checkpoint(path, cache)
    assert expected in caught.value.message and "other.safetensors" in caught.value.message


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        ({"model.diffusion_model.input_blocks.0.0.weight": (8, 4, 3, 3),
          "model.diffusion_model.label_emb.0.0.weight": (8, 2560),
          "conditioner.embedders.0.model.text_projection": (8, 8)}, "SDXL refiner"),
        ({"model.diffusion_model.input_blocks.0.0.weight": (8, 8, 3, 3),
          "cond_stage_model.transformer.text_model.final_layer_norm.weight": (8,)}, "instruct-pix2pix"),
    ],
)
def test_unsupported_sd_variants_are_refused(
    tmp_path: Path, cache: Path, shapes: dict[str, tuple[int, ...]], expected: str
) -> None:
    path = _write_state(tmp_path / "variant.safetensors", shapes)
    with pytest.raises(UserError, match="not supported yet") as caught:
        load_checkpoint(path, cache)
    assert expected in caught.value.message


# --- loading ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", LOADED_FAMILIES)
def test_single_file_loads_offline_with_original_weights(models: dict[str, Path], cache: Path, family: str) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    pipe = load_checkpoint(models[family], cache)
    _assert_same_weights(get_dummy_components(family, cache_dir=cache), pipe)
    assert pipe.scheduler.config.prediction_type == ("v_prediction" if family == "sd2-v" else "epsilon")
    first, second = _generate(pipe), _generate(pipe)
    assert first.shape == (1, 64, 64, 3)
    assert (first == second).all()


def test_diffusers_folder_loads_and_matches_single_file(models: dict[str, Path], tmp_path: Path, cache: Path) -> None:
    folder = save_tiny_checkpoint(tmp_path, "sd1", layout="diffusers", cache_dir=cache)
    from_folder = load_checkpoint(folder, cache)
    _assert_same_weights(get_dummy_components("sd1", cache_dir=cache), from_folder)
    # Same weights, loaded two ways: equal up to float rounding (the CPU kernels may pick different code paths
    # for differently aligned buffers, so this is not bit-exact; the same pipeline twice is, see above).
    assert abs(_generate(from_folder) - _generate(load_checkpoint(models["sd1"], cache))).max() < 1e-4


def test_dtype_is_applied(models: dict[str, Path], cache: Path) -> None:
    pipe = load_checkpoint(models["sd1"], cache, dtype=torch.bfloat16)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16


def test_ckpt_loads_through_weights_only(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_tiny_checkpoint(tmp_path, "sd1", suffix=".ckpt", cache_dir=cache)
    calls: list[dict[str, Any]] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    pipe = load_checkpoint(path, cache)
    assert calls and all(call.get("weights_only") is True for call in calls)
    _assert_same_weights(get_dummy_components("sd1", cache_dir=cache), pipe)


class _Payload:
    """Unpickling this runs code: the way a malicious .ckpt works. Here the code only writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_malicious_ckpt_is_refused_without_running(tmp_path: Path, cache: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1), "payload": _Payload(marker)}}, path)
    with pytest.raises(UserError, match="evil.ckpt was not loaded"):
        load_checkpoint(path, cache)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_truncated_safetensors_names_the_file(models: dict[str, Path], tmp_path: Path, cache: Path) -> None:
    data = models["sd1"].read_bytes()
    path = tmp_path / "half.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"half\.safetensors is corrupt or truncated; re-download it"):
        load_checkpoint(path, cache)


def test_missing_file(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(NotFound, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors", cache)


def test_config_that_does_not_fit_the_weights(models: dict[str, Path], tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "misfit.safetensors"
    shutil.copy(models["sd1"], path)
    shutil.copytree(models["sd1"].with_suffix(""), tmp_path / "misfit")
    unet_config = tmp_path / "misfit" / "unet" / "config.json"
    config = json.loads(unet_config.read_text())
    unet_config.write_text(json.dumps({**config, "cross_attention_dim": 64}))
    with pytest.raises(UserError, match="do not fit"):
        load_checkpoint(path, cache)


_TINY_SD1_YAML = """
model:
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    scale_factor: 0.18215
    unet_config:
      params: {image_size: 8, in_channels: 4, out_channels: 4, model_channels: 32, attention_resolutions: [1, 2, 4],
               num_res_blocks: 2, channel_mult: [1, 1, 2, 2], num_heads: 8, use_spatial_transformer: true,
               transformer_depth: 1, context_dim: 32, legacy: false}
    first_stage_config:
      params:
        embed_dim: 4
        ddconfig: {double_z: true, z_channels: 4, resolution: 64, in_channels: 3, out_ch: 3, ch: 32,
                   ch_mult: [1, 1, 2, 2], num_res_blocks: 2, attn_resolutions: []}
"""


def test_yaml_beside_checkpoint_is_the_original_config(
    models: dict[str, Path], tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "with-yaml.safetensors"
    shutil.copy(models["sd1"], path)
    path.with_suffix(".yaml").write_text(_TINY_SD1_YAML)
    # The UNet and VAE shapes come from the YAML; the text encoder's config comes from the family folder, which
    # for real models is the bundled one. Point it at the tiny model's so the tiny text encoder fits.
    tiny_family_folder = single_file.complete_config_dir(models["sd1"].with_suffix(""), "sd1", cache)
    monkeypatch.setattr(single_file, "ensure_family_config", lambda family, cache_dir: tiny_family_folder)
    pipe = load_checkpoint(path, cache)
    _assert_same_weights(get_dummy_components("sd1", cache_dir=cache), pipe)


# --- VAE and saving --------------------------------------------------------------------------------------------


def test_vae_file_loads_with_config_beside_it(tmp_path: Path, cache: Path, models: dict[str, Path]) -> None:
    vae = get_dummy_components("sd1", cache_dir=cache)["vae"]
    path = tmp_path / "tiny.vae.safetensors"
    save_file({key: value.contiguous() for key, value in vae_to_ldm(vae.state_dict(), vae.config).items()}, path)
    vae.save_config(tmp_path / "tiny.vae")
    loaded = load_vae(path, cache)
    assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in vae.state_dict().items())
    with pytest.raises(UserError, match="not a VAE"):
        load_vae(models["sd1"], cache)


def test_save_ldm_checkpoint_round_trips(models: dict[str, Path], tmp_path: Path, cache: Path) -> None:
    pipe = load_checkpoint(models["sdxl"], cache)
    saved = save_ldm_checkpoint(pipe, tmp_path / "resaved.safetensors")
    original, again = load_file(models["sdxl"]), load_file(saved)
    assert original.keys() == again.keys()
    assert all(torch.equal(original[key], again[key]) for key in original)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_conversion_gives_real_a1111_key_layout(family: str) -> None:
    """Full-size configs on the meta device (no memory): the LDM keys A1111 files are known to have."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    configs = REPO / "modules" / "engine" / "models" / "configs" / family
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(json.loads((configs / "unet" / "config.json").read_text()))
        vae = AutoencoderKL.from_config(json.loads((configs / "vae" / "config.json").read_text()))
    unet_keys = unet_to_ldm(unet.state_dict(), unet.config)
    vae_keys = vae_to_ldm(vae.state_dict(), vae.config)
    expected = {
        "sd1": ["output_blocks.11.0.skip_connection.weight", "output_blocks.2.1.conv.weight",
                "input_blocks.9.0.op.weight", "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"],
        "sdxl": ["label_emb.0.0.weight", "output_blocks.2.2.conv.weight", "input_blocks.6.0.op.weight",
                 "input_blocks.7.1.transformer_blocks.9.attn1.to_q.weight"],
    }[family]
    assert all(key in unet_keys for key in expected), [key for key in expected if key not in unet_keys]
    assert len(unet_keys) == {"sd1": 686, "sdxl": 1680}[family]
    assert tuple(vae_keys["decoder.mid.attn_1.q.weight"].shape) == (512, 512, 1, 1)
    assert "decoder.up.3.upsample.conv.weight" in vae_keys and len(vae_keys) == 248
