"""LoRA and textual-inversion embeddings on the tiny SD1 pipeline: what a user notices, and that nothing leaks.

LoRA: a tag changes the output, both multipliers act on their own component, and after the job every UNet and
text-encoder tensor is bit-for-bit the original. Bad tags and bad files give clear messages. Embeddings: A1111's
formats load, a name in the prompt becomes its vectors, wrong widths are skipped, and a malicious pickle never runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from modules.engine.embeddings import (
    EmbeddingDatabase,
    build_lookup,
    inject_embeddings,
    load_embedding_file,
    names_used,
    token_embeddings_with_fixes,
)
from modules.engine.lora import LoraCache, apply_loras, lora_hashes_infotext, lora_layer_count
from modules.engine.prompts import ChunkTokenizer, PromptChunkFix, extract_extra_networks, tokenize_prompt
from modules.errors import UserError
from modules.model_registry import ModelKind, ModelRegistry
from tests.fixtures import tiny_networks as tn
from tests.fixtures.tiny_models import tiny_pipeline

ALPHA = 2.0  # with rank 4: kohya scale 0.5


# -- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe() -> Any:
    """One tiny SD1 pipeline for the whole module: every test must leave it exactly as it found it."""
    torch.set_num_threads(1)
    return tiny_pipeline("sd1", seed=0)


@pytest.fixture(scope="module")
def original(pipe: Any) -> dict[str, dict[str, torch.Tensor]]:
    return {name: _snapshot(getattr(pipe, name)) for name in ("unet", "text_encoder")}


@pytest.fixture(autouse=True)
def clean_after(pipe: Any, original: dict[str, dict[str, torch.Tensor]]) -> Any:
    yield
    _assert_clean(pipe, original)


def _registry(root: Path) -> ModelRegistry:
    return ModelRegistry([
        ModelKind("Lora", (root / "Lora",), (".safetensors", ".pt", ".ckpt")),
        ModelKind("embeddings", (root / "embeddings",), (".pt", ".bin", ".safetensors")),
    ])


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_clean(pipe: Any, original: dict[str, dict[str, torch.Tensor]]) -> None:
    assert not any(pipe.get_list_adapters().values())
    for name, tensors in original.items():
        model = getattr(pipe, name)
        assert lora_layer_count(model) == 0
        now = model.state_dict()
        assert set(now) == set(tensors), f"{name} gained or lost tensors"
        for key, value in tensors.items():
            assert torch.equal(now[key], value), f"{name}.{key} changed"


def _unet_out(pipe: Any) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, 32, generator=generator)
    with torch.inference_mode():
        return pipe.unet(sample, 10, encoder_hidden_states=context).sample


def _te_out(pipe: Any, text: str = "a photo of a cat") -> torch.Tensor:
    ids = pipe.tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.inference_mode():
        return pipe.text_encoder(ids).last_hidden_state


def _tags(prompt: str) -> list[Any]:
    return extract_extra_networks(prompt)[1]


@pytest.fixture
def loras(tmp_path: Path, pipe: Any) -> ModelRegistry:
    """Lora/style_kohya.safetensors and Lora/sub/style_peft.safetensors: the same network in both layouts."""
    layers = tn.lora_layers(pipe, seed=3)
    tn.save_lora(tmp_path / "Lora" / "style_kohya.safetensors", tn.kohya_state_dict(layers, ALPHA),
                 {"ss_output_name": "MyStyle", "ss_base_model_version": "sd_v1"})
    tn.save_lora(tmp_path / "Lora" / "sub" / "style_peft.safetensors", tn.peft_state_dict(layers, ALPHA))
    return _registry(tmp_path)


# -- LoRA: effect and cleanup --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["style_kohya", "sub/style_peft", "style_peft", "MyStyle"])
def test_lora_changes_outputs_and_leaves_no_trace(pipe: Any, loras: ModelRegistry, name: str) -> None:
    unet_before, te_before = _unet_out(pipe), _te_out(pipe)
    with apply_loras(pipe, _tags(f"a cat <lora:{name}:1>"), loras) as applied:
        assert [a.name for a in applied] == [name]
        assert lora_layer_count(pipe.unet) == len(tn.UNET_MODULES)
        assert lora_layer_count(pipe.text_encoder) == len(tn.TEXT_MODULES)
        assert not torch.equal(_unet_out(pipe), unet_before)
        assert not torch.equal(_te_out(pipe), te_before)
    assert torch.equal(_unet_out(pipe), unet_before)
    assert torch.equal(_te_out(pipe), te_before)


def test_kohya_and_peft_layouts_give_the_same_network(pipe: Any, loras: ModelRegistry) -> None:
    # The kohya file's alpha/rank must be applied exactly once, on the UNet and on the text encoder.
    with apply_loras(pipe, _tags("<lora:style_kohya:0.7>"), loras):
        kohya = _unet_out(pipe), _te_out(pipe)
    with apply_loras(pipe, _tags("<lora:style_peft:0.7>"), loras):
        peft = _unet_out(pipe), _te_out(pipe)
    torch.testing.assert_close(kohya[0], peft[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kohya[1], peft[1], rtol=1e-5, atol=1e-6)


def test_multiplier_scales_the_lora_linearly(pipe: Any, loras: ModelRegistry) -> None:
    te_before = _te_out(pipe)
    deltas = {}
    for strength in (0.5, 1.0):
        # unet=0 keeps the UNet out of it; the text encoder's first layer is linear in the LoRA's strength.
        with apply_loras(pipe, _tags(f"<lora:style_kohya:{strength}:0>"), loras):
            embeds = pipe.text_encoder.get_input_embeddings()
            q_proj = pipe.text_encoder.encoder.layers[0].self_attn.q_proj
            x = embeds(torch.tensor([[1, 2, 3]]))
            with torch.inference_mode():
                deltas[strength] = q_proj(x) - q_proj.get_base_layer()(x)
        assert torch.equal(_te_out(pipe), te_before)
    torch.testing.assert_close(deltas[1.0], 2 * deltas[0.5], rtol=1e-5, atol=1e-6)


def test_te_multiplier_zero_leaves_text_encoder_untouched(pipe: Any, loras: ModelRegistry) -> None:
    unet_before, te_before = _unet_out(pipe), _te_out(pipe)
    with apply_loras(pipe, _tags("<lora:style_kohya:0:1>"), loras) as applied:
        assert (applied[0].te_multiplier, applied[0].unet_multiplier) == (0.0, 1.0)
        assert torch.equal(_te_out(pipe), te_before)
        assert lora_layer_count(pipe.text_encoder) == 0
        assert not torch.equal(_unet_out(pipe), unet_before)


def test_unet_multiplier_zero_leaves_unet_untouched(pipe: Any, loras: ModelRegistry) -> None:
    unet_before, te_before = _unet_out(pipe), _te_out(pipe)
    with apply_loras(pipe, _tags("<lora:style_kohya:1:unet=0>"), loras):
        assert torch.equal(_unet_out(pipe), unet_before)
        assert not torch.equal(_te_out(pipe), te_before)


def test_two_loras_add_up_and_other_tags_are_ignored(pipe: Any, loras: ModelRegistry) -> None:
    unet_before = _unet_out(pipe)
    with apply_loras(pipe, _tags("<lora:style_kohya:0.5:0.5>"), loras):
        half = _unet_out(pipe)
    prompt = "<lora:style_kohya:0.5:0.5> <hypernet:whatever:1> <lora:style_peft:0.5:0.5>"
    with apply_loras(pipe, _tags(prompt), loras) as applied:
        assert [a.name for a in applied] == ["style_kohya", "style_peft"]
        assert set(pipe.get_list_adapters()["unet"]) == {"sdstudio_lora_0", "sdstudio_lora_1"}
        both = _unet_out(pipe)
    # Two halves of one network equal the whole network only if both are active at once.
    with apply_loras(pipe, _tags("<lora:style_kohya:1:1>"), loras):
        whole = _unet_out(pipe)
    assert not torch.equal(half, unet_before)
    torch.testing.assert_close(both, whole, rtol=1e-4, atol=1e-5)


def test_no_lora_tags_touch_nothing(pipe: Any, loras: ModelRegistry) -> None:
    with apply_loras(pipe, _tags("a cat <hypernet:x:1>"), loras) as applied:
        assert applied == []


def test_exception_inside_the_block_still_removes_everything(pipe: Any, loras: ModelRegistry) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with apply_loras(pipe, _tags("<lora:style_kohya:1>"), loras):
            assert lora_layer_count(pipe.unet) > 0
            raise RuntimeError("boom")


def test_works_inside_inference_mode(pipe: Any, loras: ModelRegistry) -> None:
    unet_before = _unet_out(pipe)
    with torch.inference_mode():
        with apply_loras(pipe, _tags("<lora:style_kohya:1>"), loras):
            assert not torch.equal(_unet_out(pipe), unet_before)


def test_pickled_lora_loads_with_weights_only(pipe: Any, tmp_path: Path) -> None:
    layers = tn.lora_layers(pipe, seed=5)
    tn.save_lora(tmp_path / "Lora" / "old.pt", tn.kohya_state_dict(layers, ALPHA))
    registry = _registry(tmp_path)
    unet_before = _unet_out(pipe)
    with apply_loras(pipe, _tags("<lora:old:1>"), registry) as applied:
        assert not torch.equal(_unet_out(pipe), unet_before)
    sha = hashlib.sha256((tmp_path / "Lora" / "old.pt").read_bytes()).hexdigest()
    assert applied[0].short_hash == sha[:12]  # pickles: whole-file sha256, as A1111


def test_text_encoder_lora_without_out_proj_is_not_dropped(pipe: Any, tmp_path: Path) -> None:
    # diffusers guesses the text-encoder key format from the presence of out_proj layers; q_proj alone must load.
    layers = tn.lora_layers(pipe, seed=4)
    q_proj = "encoder.layers.0.self_attn.q_proj"
    layers["text_encoder"] = {q_proj: layers["text_encoder"][q_proj]}
    tn.save_lora(tmp_path / "Lora" / "q_only.safetensors", tn.kohya_state_dict(layers, ALPHA))
    te_before = _te_out(pipe)
    with apply_loras(pipe, _tags("<lora:q_only:1:0>"), _registry(tmp_path)):
        assert lora_layer_count(pipe.text_encoder) == 1
        assert not torch.equal(_te_out(pipe), te_before)


def test_sdxl_lora_with_sgm_names_on_sdxl(tmp_path: Path) -> None:
    xl = tiny_pipeline("sdxl", seed=0)
    components = ("unet", "text_encoder", "text_encoder_2")
    before = {name: _snapshot(getattr(xl, name)) for name in components}
    tn.save_lora(tmp_path / "Lora" / "xl.safetensors", tn.sdxl_kohya_state_dict())
    with apply_loras(xl, _tags("<lora:xl:0.8:1>"), _registry(tmp_path), family="sdxl"):
        # input_blocks_4_1 (SGM) is down_blocks.1.attentions.0 (diffusers); te multiplier reaches both encoders.
        assert [lora_layer_count(getattr(xl, name)) for name in components] == [2, 1, 1]
        assert xl.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2.to_k.scaling["sdstudio_lora_0"] == 1.0
        assert xl.text_encoder_2.text_model.encoder.layers[0].self_attn.q_proj.scaling["sdstudio_lora_0"] == 0.8
    _assert_clean(xl, before)


# -- LoRA: cache --------------------------------------------------------------------------------------------------


def test_cache_reuses_the_converted_file_until_it_changes(pipe: Any, loras: ModelRegistry, tmp_path: Path) -> None:
    cache = LoraCache(max_entries=8)
    tags = _tags("<lora:style_kohya:1>")
    with apply_loras(pipe, tags, loras, cache=cache):
        first = _unet_out(pipe)
    with apply_loras(pipe, tags, loras, cache=cache):
        second = _unet_out(pipe)
    assert (cache.misses, cache.hits) == (1, 1)
    assert torch.equal(first, second)

    path = tmp_path / "Lora" / "style_kohya.safetensors"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with apply_loras(pipe, tags, loras, cache=cache):
        pass
    assert cache.misses == 2  # a new mtime means the file is read again


def test_cache_is_bounded(pipe: Any, loras: ModelRegistry) -> None:
    cache = LoraCache(max_entries=1)
    for name in ("style_kohya", "style_peft", "style_kohya"):
        with apply_loras(pipe, _tags(f"<lora:{name}:1>"), loras, cache=cache):
            pass
    assert (cache.misses, cache.hits) == (3, 0)


# -- LoRA: hashes ------------------------------------------------------------------------------------------------


def _addnet_hash(path: Path) -> str:
    data = path.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header_length:]).hexdigest()


def test_lora_hashes_infotext_is_a1111s(pipe: Any, loras: ModelRegistry, tmp_path: Path) -> None:
    with apply_loras(pipe, _tags("<lora:style_kohya:1> <lora:sub/style_peft:0.5>"), loras) as applied:
        pass
    kohya = _addnet_hash(tmp_path / "Lora" / "style_kohya.safetensors")[:12]
    peft = _addnet_hash(tmp_path / "Lora" / "sub" / "style_peft.safetensors")[:12]
    assert applied[0].short_hash == kohya
    assert applied[0].path == tmp_path / "Lora" / "style_kohya.safetensors"
    assert lora_hashes_infotext(applied) == f"style_kohya: {kohya}, sub/style_peft: {peft}"


def test_lora_hash_ignores_metadata_edits(pipe: Any, tmp_path: Path) -> None:
    state = tn.kohya_state_dict(tn.lora_layers(pipe, seed=1), ALPHA)
    first = tn.save_lora(tmp_path / "a.safetensors", state, {"ss_output_name": "a"})
    second = tn.save_lora(tmp_path / "b.safetensors", state, {"ss_output_name": "something much longer"})
    assert first.read_bytes() != second.read_bytes()
    from modules.engine.lora import addnet_hash

    assert addnet_hash(first) == addnet_hash(second)


def test_lora_hashes_infotext_strips_separators_and_skips_unhashed() -> None:
    from modules.engine.lora import AppliedLora

    applied = [AppliedLora("a:b,c", Path("x"), 1, 1, "0123456789ab"), AppliedLora("d", Path("y"), 1, 1, None)]
    assert lora_hashes_infotext(applied) == "abc: 0123456789ab"
    assert lora_hashes_infotext([]) is None


# -- LoRA: errors ------------------------------------------------------------------------------------------------


def test_missing_lora_names_close_matches(pipe: Any, loras: ModelRegistry) -> None:
    with pytest.raises(UserError) as caught:
        with apply_loras(pipe, _tags("<lora:style_kohya:1> <lora:style_kohay:1>"), loras):
            pytest.fail("must not enter")
    assert caught.value.field == "prompt"
    assert "'style_kohay' not found" in caught.value.message
    assert "style_kohya" in caught.value.message.split("not found")[1]


def test_missing_lora_without_any_similar_name(pipe: Any, loras: ModelRegistry) -> None:
    with pytest.raises(UserError, match="none with a similar name"):
        with apply_loras(pipe, _tags("<lora:zzzzqqqq:1>"), loras):
            pass


def test_lora_added_after_the_scan_is_found(pipe: Any, loras: ModelRegistry, tmp_path: Path) -> None:
    assert [f.name for f in loras.list("Lora")] == ["style_kohya", "sub/style_peft"]
    tn.save_lora(tmp_path / "Lora" / "fresh.safetensors", tn.kohya_state_dict(tn.lora_layers(pipe, seed=7), ALPHA))
    with apply_loras(pipe, _tags("<lora:fresh:1>"), loras) as applied:
        assert applied[0].path.name == "fresh.safetensors"


@pytest.mark.parametrize(
    ("tensors", "expected"),
    [
        ({"conv.weight": torch.randn(4, 4), "fc.bias": torch.randn(4)}, "not a LoRA: it has 2 tensors"),
        ({"model.diffusion_model.input_blocks.0.0.weight": torch.randn(4, 4, 3, 3)}, "full Stable Diffusion"),
        ({"emb_params": torch.randn(2, 32)}, "textual-inversion embedding"),
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a": torch.randn(4, 4),
          "lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_b": torch.randn(4, 4)}, "LyCORIS"),
    ],
)
def test_file_that_is_not_a_lora_is_refused(pipe: Any, tmp_path: Path, tensors: dict[str, Any], expected: str) -> None:
    tn.save_lora(tmp_path / "Lora" / "odd.safetensors", tensors)
    with pytest.raises(UserError, match=expected) as caught:
        with apply_loras(pipe, _tags("<lora:odd:1>"), _registry(tmp_path)):
            pass
    assert caught.value.field == "prompt"


def test_corrupt_lora_file(pipe: Any, tmp_path: Path) -> None:
    (tmp_path / "Lora").mkdir()
    (tmp_path / "Lora" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(UserError, match="corrupt"):
        with apply_loras(pipe, _tags("<lora:broken:1>"), _registry(tmp_path)):
            pass


def test_sdxl_lora_on_sd1_says_so(pipe: Any, tmp_path: Path) -> None:
    tn.save_lora(tmp_path / "Lora" / "xl.safetensors", tn.sdxl_kohya_state_dict())
    with pytest.raises(UserError) as caught:
        with apply_loras(pipe, _tags("<lora:xl:1>"), _registry(tmp_path), family="sd1"):
            pass
    assert "made for SDXL; the loaded checkpoint is SD1" in caught.value.message
    assert caught.value.field == "prompt"


def test_lora_of_other_sizes_is_refused_before_touching_the_model(pipe: Any, tmp_path: Path) -> None:
    # diffusers naming, but the cross-attention width of the tiny SDXL (96): only the sizes tell.
    state = {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.randn(4, 96),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.randn(32, 4),
    }
    tn.save_lora(tmp_path / "Lora" / "wide.safetensors", state)
    tn.save_lora(tmp_path / "Lora" / "wide_xl.safetensors", state, {"ss_base_model_version": "sdxl_base_v1-0"})
    registry = _registry(tmp_path)
    with pytest.raises(UserError, match="does not fit the loaded SD1 checkpoint"):
        with apply_loras(pipe, _tags("<lora:wide:1>"), registry):
            pass
    with pytest.raises(UserError, match="made for SDXL; the loaded checkpoint is SD1"):
        with apply_loras(pipe, _tags("<lora:wide_xl:1>"), registry):
            pass


# -- embeddings: files -------------------------------------------------------------------------------------------


def test_a1111_pt_embedding(tmp_path: Path) -> None:
    vectors = torch.randn(3, 32)
    embedding = load_embedding_file(tn.a1111_embedding(tmp_path / "mystyle.pt", vectors, step=1200))
    assert (embedding.name, embedding.vector_count, embedding.shape, embedding.step) == ("mystyle", 3, 32, 1200)
    assert embedding.sd_checkpoint_name == "v1-5-pruned-emaonly"
    assert torch.equal(embedding.vectors[32], vectors)


@pytest.mark.parametrize(
    ("filename", "tensors", "count", "shape"),
    [
        ("kohya.safetensors", {"emb_params": torch.randn(2, 32)}, 2, 32),
        ("single.safetensors", {"anything": torch.randn(4, 32)}, 4, 32),
        ("xl.safetensors", {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 64)}, 2, 96),
    ],
)
def test_safetensors_embeddings(
    tmp_path: Path, filename: str, tensors: dict[str, Any], count: int, shape: int
) -> None:
    tn.save_lora(tmp_path / filename, tensors)
    embedding = load_embedding_file(tmp_path / filename)
    assert (embedding.vector_count, embedding.shape) == (count, shape)


def test_diffusers_concept_bin(tmp_path: Path) -> None:
    torch.save({"<cat-toy>": torch.randn(32)}, tmp_path / "cat-toy.bin")
    embedding = load_embedding_file(tmp_path / "cat-toy.bin")
    assert (embedding.name, embedding.vector_count, embedding.shape) == ("cat-toy", 1, 32)


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_never_runs(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "pwned"
    path = tn.malicious_pickle(tmp_path / "embeddings" / "evil.pt", marker, zip_format=zip_format)
    with pytest.raises(UserError, match="not loaded"):
        load_embedding_file(path)
    database = EmbeddingDatabase(_registry(tmp_path))
    database.load([32])
    assert "evil" in database.errors and "evil" not in database.loaded
    assert not marker.exists()


# -- embeddings: database ----------------------------------------------------------------------------------------


@pytest.fixture
def embeddings(tmp_path: Path) -> EmbeddingDatabase:
    folder = tmp_path / "embeddings"
    tn.a1111_embedding(folder / "mystyle.pt", torch.randn(2, 32) * 3)
    tn.save_lora(folder / "sub" / "badhands.safetensors", {"emb_params": torch.randn(1, 32) * 3})
    tn.save_lora(folder / "sd2thing.safetensors", {"emb_params": torch.randn(4, 1024)})
    tn.save_lora(folder / "xlthing.safetensors", {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 64)})
    (folder / "notes.safetensors").write_bytes(b"garbage")
    database = EmbeddingDatabase(_registry(tmp_path))
    database.load([32])
    return database


def test_loaded_skipped_and_errors(embeddings: EmbeddingDatabase) -> None:
    assert list(embeddings.loaded) == ["badhands", "mystyle"]
    assert set(embeddings.skipped) == {"sd2thing", "xlthing"}
    assert set(embeddings.errors) == {"notes"}
    listing = embeddings.api_listing()
    assert listing["loaded"]["mystyle"] == {
        "step": 500, "sd_checkpoint": "6ce0161689", "sd_checkpoint_name": "v1-5-pruned-emaonly",
        "shape": 32, "vectors": 2,
    }
    assert listing["skipped"]["sd2thing"]["shape"] == 1024
    assert listing["skipped"]["xlthing"] == {
        "step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 96, "vectors": 2}
    json.dumps(listing)  # the API returns it as it is


def test_sdxl_model_loads_only_pairs(embeddings: EmbeddingDatabase) -> None:
    embeddings.load([32, 64])
    assert list(embeddings.loaded) == ["xlthing"]
    assert set(embeddings.vectors_for(64)) == {"xlthing"}
    assert embeddings.vectors_for(64)["xlthing"].shape == (2, 64)


def test_new_files_are_found_on_the_next_load(embeddings: EmbeddingDatabase, tmp_path: Path) -> None:
    tn.a1111_embedding(tmp_path / "embeddings" / "later.pt", torch.randn(1, 32))
    embeddings.load([32])
    assert "later" in embeddings.loaded


def _chunk_tokenizer(tokenizer: Any) -> ChunkTokenizer:
    return ChunkTokenizer(
        tokenize=lambda texts: tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"],
        bos_token=tokenizer.bos_token_id,
        eos_token=tokenizer.eos_token_id,
        comma_token=tokenizer.get_vocab().get(",</w>"),
    )


def test_lookup_finds_the_name_in_a_prompt(pipe: Any, embeddings: EmbeddingDatabase) -> None:
    lookup = embeddings.lookup_for(pipe.tokenizer, 32)
    chunks, count = tokenize_prompt("a photo of mystyle, (badhands:1.2)", _chunk_tokenizer(pipe.tokenizer),
                                    embedding_lookup=lookup)
    prefix = len(pipe.tokenizer("a photo of", add_special_tokens=False).input_ids)
    assert chunks[0].fixes[0] == PromptChunkFix(prefix, "mystyle")
    assert chunks[0].tokens[prefix + 1:prefix + 3] == [0, 0]  # two placeholder positions after BOS
    assert [fix.embedding for fix in chunks[0].fixes] == ["mystyle", "badhands"]
    assert chunks[0].multipliers[chunks[0].fixes[1].offset + 1] == pytest.approx(1.2)
    assert names_used(chunks) == ["mystyle", "badhands"]
    # Skipped embeddings are plain words.
    chunks, _ = tokenize_prompt("sd2thing", _chunk_tokenizer(pipe.tokenizer), embedding_lookup=lookup)
    assert chunks[0].fixes == []


def test_lookup_prefers_the_longest_name(pipe: Any) -> None:
    lookup = build_lookup(pipe.tokenizer, {"red": 1, "red-dragon-style": 3})
    tokens = pipe.tokenizer("a red-dragon-style red", add_special_tokens=False).input_ids
    long_match = lookup(tokens, 1)
    assert long_match is not None and (long_match.name, long_match.vector_count) == ("red-dragon-style", 3)
    assert long_match.token_count == len(pipe.tokenizer("red-dragon-style", add_special_tokens=False).input_ids)
    short = lookup(tokens, 1 + long_match.token_count)
    assert short is not None and short.name == "red"
    assert lookup(tokens, 0) is None


def _encode(pipe: Any, prompt: str, embeddings: EmbeddingDatabase) -> torch.Tensor:
    lookup = embeddings.lookup_for(pipe.tokenizer, 32)
    (chunk,), _ = tokenize_prompt(prompt, _chunk_tokenizer(pipe.tokenizer), embedding_lookup=lookup)
    tokens = torch.tensor([chunk.tokens])
    with torch.inference_mode(), inject_embeddings(pipe.text_encoder, [chunk.fixes], embeddings.vectors_for(32)):
        return pipe.text_encoder(tokens).last_hidden_state


def test_embedding_vectors_reach_the_encoder(pipe: Any, embeddings: EmbeddingDatabase) -> None:
    with_embedding = _encode(pipe, "a photo of mystyle", embeddings)
    plain_word = _encode(pipe, "a photo of cat cat", embeddings)  # the same length in tokens
    assert with_embedding.shape == plain_word.shape
    assert not torch.allclose(with_embedding, plain_word)

    # Independent computation: add the vectors to the vocabulary as new tokens, as diffusers' TI loader does.
    vectors = embeddings.vectors_for(32)["mystyle"]
    te = pipe.text_encoder
    vocab = te.get_input_embeddings().weight.shape[0]
    ids = pipe.tokenizer("a photo of", padding="max_length", max_length=77, return_tensors="pt").input_ids
    ids = torch.cat([ids[:, :4], torch.tensor([[vocab, vocab + 1]]), ids[:, 4:-2]], dim=1)
    extended = torch.nn.Embedding(vocab + 2, 32)
    with torch.no_grad():
        extended.weight.copy_(torch.cat([te.get_input_embeddings().weight, vectors]))
    original_layer = te.get_input_embeddings()
    try:
        te.set_input_embeddings(extended)
        with torch.inference_mode():
            expected = te(ids).last_hidden_state
    finally:
        te.set_input_embeddings(original_layer)
    torch.testing.assert_close(with_embedding, expected, rtol=1e-5, atol=1e-6)


def test_token_embeddings_with_fixes_writes_after_bos(pipe: Any, embeddings: EmbeddingDatabase) -> None:
    tokens = torch.tensor([[49406, 320, 0, 0, 49407] + [49407] * 72])
    vectors = embeddings.vectors_for(32)
    with torch.inference_mode():
        fixed = token_embeddings_with_fixes(pipe.text_encoder, tokens, [[PromptChunkFix(1, "mystyle")]], vectors)
        plain = pipe.text_encoder.get_input_embeddings()(tokens)
    assert torch.equal(fixed[0, 2:4], vectors["mystyle"])
    assert torch.equal(fixed[0, :2], plain[0, :2]) and torch.equal(fixed[0, 4:], plain[0, 4:])


def test_hook_is_removed_after_the_block(pipe: Any, embeddings: EmbeddingDatabase) -> None:
    layer = pipe.text_encoder.get_input_embeddings()
    hooks_before = len(layer._forward_hooks)
    with pytest.raises(RuntimeError):
        with inject_embeddings(pipe.text_encoder, [[PromptChunkFix(0, "mystyle")]], embeddings.vectors_for(32)):
            assert len(layer._forward_hooks) == hooks_before + 1
            raise RuntimeError("boom")
    assert len(layer._forward_hooks) == hooks_before


def test_ti_hashes_infotext(embeddings: EmbeddingDatabase, tmp_path: Path) -> None:
    sha = {name: hashlib.sha256(path.read_bytes()).hexdigest()[:12] for name, path in (
        ("mystyle", tmp_path / "embeddings" / "mystyle.pt"),
        ("badhands", tmp_path / "embeddings" / "sub" / "badhands.safetensors"),
    )}
    text = embeddings.ti_hashes_infotext(["badhands", "mystyle", "badhands"])
    assert text == f"badhands: {sha['badhands']}, mystyle: {sha['mystyle']}"
    assert embeddings.ti_hashes_infotext([]) is None


def test_modules_import_without_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; import modules.engine.lora, modules.engine.embeddings; "
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
