"""The device and memory manager on CPU: device/dtype choice, flags, pipeline preparation on a tiny SD pipeline,
VAE tiling, release and leak checks, OOM recovery with an injected mid-job OOM, and describe()."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0, SlicedAttnProcessor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from modules import cli
from modules.engine.memory import MemoryConfig, MemoryManager, OutOfMemory, is_oom
from modules.engine.memory.devices import vae_dtype_for
from modules.engine.memory.oom import oom_message
from modules.errors import UserError

MIB = 1024**2
ON_GPU = torch.cuda.is_available() or torch.backends.mps.is_available()


# -- tiny pipeline ----------------------------------------------------------------------------------------------


def _byte_symbols() -> list[str]:
    """The 256 byte-level BPE symbols: printable Latin-1 bytes as themselves, the rest shifted past U+0100."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), 256))
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in sorted(printable)] + [chr(256 + i) for i in range(len(shifted))]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges (no download): every character is its own token."""
    folder = tmp_path_factory.mktemp("tokenizer")
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}), encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(folder))


def tiny_pipeline(tokenizer: CLIPTokenizer, ballast_mib: int = 0) -> StableDiffusionPipeline:
    """The diffusers-test-sized SD pipeline; `ballast_mib` adds a filled buffer so leaks show up in RSS."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, norm_num_groups=2, attention_head_dim=2,
    )
    if ballast_mib:
        unet.register_buffer("ballast", torch.ones(ballast_mib * MIB // 4))  # ones, so the pages are touched
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[4, 8], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=2,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=8, intermediate_size=16, layer_norm_eps=1e-05,
        num_attention_heads=2, num_hidden_layers=2, pad_token_id=1, vocab_size=1000,
    ))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: StableDiffusionPipeline, **kwargs: Any) -> torch.Tensor:
    """A 2-step 32×32 image as a (1, 3, 32, 32) tensor."""
    return pipe("a cat", num_inference_steps=2, height=32, width=32, output_type="pt",
                generator=torch.Generator().manual_seed(0), **kwargs).images


def cpu_manager(**fields: Any) -> MemoryManager:
    return MemoryManager(MemoryConfig(device="cpu", **fields))


@pytest.fixture
def pipe(tokenizer: CLIPTokenizer) -> Iterator[StableDiffusionPipeline]:
    yield tiny_pipeline(tokenizer)


# -- config and device choice -----------------------------------------------------------------------------------


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, modules.engine.memory; assert 'torch' not in sys.modules and 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_from_args_maps_every_flag() -> None:
    args = cli.parse_strict(
        ["--device", "cuda:1", "--precision", "bf16", "--medvram", "--lowvram", "--no-half-vae", "--xformers",
         "--opt-sdp-attention"], {},
    )
    config = MemoryConfig.from_args(args)
    assert (config.device, config.precision) == ("cuda:1", "bf16")
    assert config.medvram and config.lowvram and config.no_half_vae and config.xformers and config.sdp
    assert config.offload == "sequential"  # --lowvram wins over --medvram, as in A1111


def test_from_args_defaults_no_half_and_settings() -> None:
    config = MemoryConfig.from_args(cli.parse_strict([], {}))
    assert config == MemoryConfig()
    assert config.offload == "none" and config.device == "auto" and config.precision == "auto"
    assert MemoryConfig.from_args(cli.parse_strict(["--no-half"], {})).precision == "fp32"
    assert MemoryConfig.from_args(cli.parse_strict(["--medvram"], {})).offload == "model"
    tuned = MemoryConfig.from_args(cli.parse_strict([], {}), vae_tiling="on", attention_slicing=True, compile=True)
    assert (tuned.vae_tiling, tuned.attention_slicing, tuned.compile) == ("on", True, True)
    with pytest.raises(TypeError):
        MemoryConfig.from_args(cli.parse_strict([], {}), vae_tilling="on")
    for bad in ({"vae_tiling": "sometimes"}, {"precision": "fp8"}, {"device": "gpu"}, {"vae_tile_threshold_sd": 0}):
        with pytest.raises(ValueError):
            MemoryConfig(**bad)


def test_auto_picks_the_best_device_here() -> None:
    memory = MemoryManager(MemoryConfig())
    if torch.cuda.is_available():
        assert memory.device.type == "cuda" and memory.dtype == torch.float16
    elif torch.backends.mps.is_available():
        assert memory.device.type == "mps" and memory.dtype == torch.float16
    else:
        assert memory.device == torch.device("cpu") and memory.dtype == torch.float32
        assert memory.vae_dtype == torch.float32


def test_cpu_precision_rules() -> None:
    assert cpu_manager(precision="bf16").dtype == torch.bfloat16  # explicit bf16 is honoured on CPU
    half = cpu_manager(precision="fp16")
    assert half.dtype == torch.float32 and any("fp16 on CPU" in n for n in half.resolve().notes)
    no_half_vae = cpu_manager(precision="bf16", no_half_vae=True)
    assert no_half_vae.dtype == torch.bfloat16 and no_half_vae.vae_dtype == torch.float32


@pytest.mark.skipif(torch.cuda.device_count() > 3, reason="this machine really has a cuda:3")
def test_missing_cuda_device_is_a_user_error_listing_devices() -> None:
    with pytest.raises(UserError) as err:
        MemoryManager(MemoryConfig(device="cuda:3")).resolve()
    assert "cuda:3" in err.value.message and "Available devices: cpu" in err.value.message
    assert err.value.field == "device"


def test_vae_dtype_follows_no_half_vae_and_sdxl_force_upcast() -> None:
    fp16, fp32, bf16 = torch.float16, torch.float32, torch.bfloat16
    assert vae_dtype_for(fp16, True, "sd1", False) == fp32
    assert vae_dtype_for(fp16, False, "sdxl", True) == fp32  # SDXL pipelines honour force_upcast
    assert vae_dtype_for(fp16, False, "sdxl", False) == fp16  # an fp16-fixed SDXL VAE stays half
    assert vae_dtype_for(fp16, False, "sd1", True) == fp16  # SD1 pipelines ignore force_upcast, as A1111 does
    assert vae_dtype_for(bf16, False, "sdxl-inpaint", True) == bf16  # bf16 never overflows


# -- prepare_pipeline -------------------------------------------------------------------------------------------


def test_prepare_applies_sdpa_slicing_channels_last_and_still_generates(pipe: StableDiffusionPipeline) -> None:
    memory = cpu_manager(channels_last=True)
    record = memory.prepare_pipeline(pipe, "sd1")
    assert record.attention == "sdpa" and record.vae_slicing and record.channels_last
    assert (record.device, record.dtype, record.vae_dtype, record.offload) == ("cpu", "float32", "float32", "none")
    assert record.tf32 is None and record.compiled is None  # CUDA-only settings do nothing on CPU
    assert all(isinstance(p, AttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    assert pipe.vae.use_slicing
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert memory.prepare_pipeline(pipe, "sd1") is record  # idempotent
    with memory.use(pipe):
        image = generate(pipe)
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()


def test_no_half_vae_keeps_the_vae_fp32_inside_a_bf16_pipeline(pipe: StableDiffusionPipeline) -> None:
    memory = cpu_manager(precision="bf16", no_half_vae=True)
    record = memory.prepare_pipeline(pipe, "sd1")
    assert (record.dtype, record.vae_dtype, record.vae_cast_hooks) == ("bfloat16", "float32", True)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.float32
    with memory.use(pipe):
        image = generate(pipe)  # SD1 pipelines pass bf16 latents to the VAE: the cast hooks adapt them
    assert torch.isfinite(image.float()).all()


def test_attention_slicing_and_flags_that_mean_nothing_on_cpu(pipe: StableDiffusionPipeline) -> None:
    memory = cpu_manager(attention_slicing=True, xformers=True, medvram=True, compile=True)
    record = memory.prepare_pipeline(pipe, "sd1")
    assert record.attention == "sliced" and record.offload == "none" and record.compiled is None
    notes = " ".join(record.notes)
    assert "xformers" in notes and "--medvram only matters on a GPU" in notes and "torch.compile" in notes
    assert any(isinstance(p, SlicedAttnProcessor) for p in pipe.unet.attn_processors.values())
    with memory.use(pipe):
        generate(pipe)


def test_reconfigure_reaches_loaded_pipelines_at_next_use(pipe: StableDiffusionPipeline) -> None:
    memory = cpu_manager()
    memory.prepare_pipeline(pipe, "sd1")
    memory.reconfigure(memory.config.with_settings(attention_slicing=True, vae_slicing=False))
    with memory.use(pipe):
        pass
    record = memory.record_for(pipe)
    assert record is not None and record.attention == "sliced" and not record.vae_slicing
    assert not pipe.vae.use_slicing
    with pytest.raises(ValueError, match="restart"):
        memory.reconfigure(memory.config.with_settings(lowvram=True))


def test_use_requires_a_prepared_pipeline(pipe: StableDiffusionPipeline) -> None:
    with pytest.raises(ValueError, match="prepare_pipeline"):
        with cpu_manager().use(pipe):
            pass


@pytest.mark.parametrize(
    ("family", "mode", "size", "tiled"),
    [
        ("sd1", "auto", (1024, 1024), False),
        ("sd1", "auto", (1024, 1032), True),
        ("sdxl", "auto", (1536, 1536), False),
        ("sdxl", "auto", (2048, 2056), True),
        ("sd1", "on", (64, 64), True),
        ("sd1", "off", (4096, 4096), False),
    ],
)
def test_vae_tiling_follows_size_and_family(
    pipe: StableDiffusionPipeline, family: str, mode: str, size: tuple[int, int], tiled: bool
) -> None:
    memory = cpu_manager(vae_tiling=mode)
    memory.prepare_pipeline(pipe, family)
    assert memory.vae_tiling_for(pipe, *size) is tiled
    assert pipe.vae.use_tiling is tiled


def test_vae_tiling_auto_switches_back_off_for_a_small_job(pipe: StableDiffusionPipeline) -> None:
    memory = cpu_manager(vae_tile_threshold_sd=48 * 48)
    memory.prepare_pipeline(pipe, "sd1")
    assert memory.vae_tiling_for(pipe, 64, 64) and pipe.vae.use_tiling
    assert not memory.vae_tiling_for(pipe, 32, 32) and not pipe.vae.use_tiling


# -- release, forget, collect -----------------------------------------------------------------------------------


def test_registry_is_weak_a_dropped_pipeline_is_not_kept_alive(tokenizer: CLIPTokenizer) -> None:
    memory = cpu_manager()
    pipe = tiny_pipeline(tokenizer)
    memory.prepare_pipeline(pipe, "sd1")
    assert memory.live_pipelines() == 1
    del pipe
    gc.collect()
    assert memory.live_pipelines() == 0


def test_forget_then_collect_frees_and_reports_holders(tokenizer: CLIPTokenizer) -> None:
    memory = cpu_manager()
    pipe = tiny_pipeline(tokenizer)
    memory.prepare_pipeline(pipe, "sd1")
    with memory.use(pipe):
        generate(pipe)
    memory.forget(pipe)
    assert memory.collect() == 1 and memory.live_pipelines() == 1  # the test still holds it: reported
    with pytest.raises(ValueError):
        with memory.use(pipe):
            pass
    del pipe
    assert memory.collect() == 0 and memory.live_pipelines() == 0


def test_a_forgotten_pipeline_without_offload_can_be_prepared_again(pipe: StableDiffusionPipeline) -> None:
    memory = cpu_manager()
    record = memory.prepare_pipeline(pipe, "sd1")
    memory.forget(pipe)
    assert memory.prepare_pipeline(pipe, "sd1") is record
    with memory.use(pipe):
        generate(pipe)


def _rss() -> int:
    return psutil.Process().memory_info().rss


def test_rss_does_not_grow_over_checkpoint_switches(tokenizer: CLIPTokenizer) -> None:
    memory = cpu_manager()
    ballast = 64  # MiB per pipeline, so a leaked pipeline is far above the measurement noise

    def cycle(keep: list[StableDiffusionPipeline] | None) -> None:
        pipe = tiny_pipeline(tokenizer, ballast_mib=ballast)
        memory.prepare_pipeline(pipe, "sd1")
        with memory.use(pipe):
            generate(pipe)
        memory.forget(pipe)
        if keep is not None:
            keep.append(pipe)
        del pipe
        memory.collect()

    cycle(None)  # warm-up: first-call allocations (kernels, caches) are not a leak
    before = _rss()
    for _ in range(5):
        cycle(None)
    grown = _rss() - before
    assert memory.live_pipelines() == 0
    assert grown < 100 * MIB, f"RSS grew {grown / MIB:.0f} MiB over 5 switches"

    # Control: the same cycles with a leak (references kept) must show up, or the check above proves nothing.
    held: list[StableDiffusionPipeline] = []
    before = _rss()
    for _ in range(5):
        cycle(held)
    assert memory.collect() == 5 and memory.live_pipelines() == 5
    assert _rss() - before > 4 * ballast * MIB
    held.clear()
    assert memory.collect() == 0


def test_release_on_cpu_moves_nothing_and_jobs_still_run(pipe: StableDiffusionPipeline) -> None:
    memory = cpu_manager()
    memory.prepare_pipeline(pipe, "sd1")
    assert memory.release(pipe) is False and memory.release_all() == 0
    with memory.use(pipe):
        generate(pipe)


def test_a_guest_and_the_pipelines_take_turns_on_the_device(pipe: StableDiffusionPipeline) -> None:
    """SadTalker registers as a guest: its weights leave the device before SD runs, and the other way round."""
    memory = cpu_manager()
    memory.prepare_pipeline(pipe, "sd1")
    released: list[str] = []
    memory.add_guest("talking-head", lambda: released.append("talking-head"))
    memory.add_guest("other", lambda: released.append("other"))
    with memory.use(pipe):
        generate(pipe)
    assert released == []  # no guest has been on the device yet
    with memory.guest("talking-head") as choice:
        assert choice.device.type == "cpu"
    with memory.guest("talking-head"):
        pass
    assert released == []  # the same guest again: nothing to move
    with memory.guest("other"):
        pass
    assert released == ["talking-head"]
    with memory.use(pipe):
        generate(pipe)
    assert released == ["talking-head", "other"]
    with pytest.raises(ValueError, match="not a registered guest"):
        with memory.guest("nobody"):
            pass


def test_an_oom_inside_a_guest_becomes_advice_and_releases_it() -> None:
    memory = cpu_manager()
    released: list[str] = []
    memory.add_guest("talking-head", lambda: released.append("talking-head"))
    memory.inject_oom()
    with pytest.raises(OutOfMemory, match="Out of memory on cpu"):
        with memory.guest("talking-head"):
            memory.check_allocation()
    assert released == ["talking-head"]


# -- out of memory ----------------------------------------------------------------------------------------------


def test_injected_oom_mid_job_becomes_advice_and_the_next_job_works(pipe: StableDiffusionPipeline) -> None:
    memory = cpu_manager()
    memory.prepare_pipeline(pipe, "sd1")
    steps: list[int] = []

    def on_step(_pipe: Any, step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        steps.append(step)
        memory.check_allocation()
        return kwargs

    memory.inject_oom()
    with pytest.raises(OutOfMemory) as err:
        with memory.use(pipe):
            generate(pipe, callback_on_step_end=on_step)
    assert steps == [0]  # it failed mid-job, inside the denoising loop
    oom = err.value
    assert isinstance(oom, UserError) and oom.status_code == 503 and oom.to_json()["error"] == "OutOfMemory"
    assert oom.device == "cpu" and oom.free_bytes is not None and oom.free_bytes > 0
    assert "Out of memory on cpu" in oom.message and "RAM was free" in oom.message
    assert "smaller width/height or batch size" in oom.message and "VAE tiling" in oom.message
    assert oom.__cause__ is None  # the original traceback (and its tensors) is not carried along

    with memory.use(pipe):
        image = generate(pipe, callback_on_step_end=on_step)
    assert image.shape == (1, 3, 32, 32)


def test_oom_guard_converts_real_oom_errors_and_passes_others(pipe: StableDiffusionPipeline) -> None:
    memory = cpu_manager()
    with pytest.raises(OutOfMemory):
        with memory.oom_guard():
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 3.00 GiB total capacity)")
    with pytest.raises(ValueError, match="not memory"):
        with memory.oom_guard():
            raise ValueError("not memory")
    with memory.oom_guard():
        pass  # a clean block stays clean


def test_is_oom_recognises_every_backend() -> None:
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1 GB)"))
    assert is_oom(RuntimeError("Invalid buffer size: 12.00 GB"))
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:114] DefaultCPUAllocator: can't allocate memory"))
    assert is_oom(MemoryError())
    assert not is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_oom(ValueError("out of memory"))  # only runtime/allocator errors count


def test_inject_oom_counts_down() -> None:
    memory = cpu_manager()
    memory.inject_oom(times=2)
    for _ in range(2):
        with pytest.raises(torch.OutOfMemoryError, match="simulated"):
            memory.check_allocation()
    memory.check_allocation()
    with pytest.raises(ValueError):
        memory.inject_oom(0)


def test_gpu_advice_names_the_flags_still_left_to_try() -> None:
    normal = oom_message(MemoryConfig(), "cuda:0 (Test GPU)", True, 300 * MIB, 8 * 1024 * MIB)
    assert "0.3 GiB of 8.0 GiB VRAM was free" in normal
    assert "--medvram" in normal and "--lowvram" in normal and "next job starts clean" in normal
    lowest = oom_message(MemoryConfig(lowvram=True, vae_tiling="on"), "cuda:0", True, None, None)
    assert "--medvram" not in lowest and "--lowvram" not in lowest and "VAE tiling" not in lowest
    assert "smaller width/height" in lowest


# -- describe and threads ---------------------------------------------------------------------------------------


def test_describe_on_cpu(pipe: StableDiffusionPipeline) -> None:
    memory = cpu_manager()
    memory.prepare_pipeline(pipe, "sd1")
    info = memory.describe()
    assert info["device"] == "cpu" and info["device_name"].startswith("cpu")
    assert (info["dtype"], info["vae_dtype"], info["offload"], info["error"]) == ("float32", "float32", "none", None)
    assert info["vram"] is None
    assert info["ram"]["total"] > 0 and info["ram"]["available"] > 0 and info["ram"]["process_rss"] > 0
    assert info["live_pipelines"] == 1 and info["pipelines"][0]["family"] == "sd1"
    assert info["config"]["device"] == "cpu"
    json.dumps(info)  # ready for an API response as is


def test_describe_reports_a_bad_device_instead_of_failing() -> None:
    info = MemoryManager(MemoryConfig(device="cuda:7" if torch.cuda.device_count() < 8 else "cpu")).describe()
    if info["device"] is None:
        assert "cuda:7" in info["error"] and info["ram"] is not None


def test_describe_from_other_threads_while_the_worker_prepares(tokenizer: CLIPTokenizer) -> None:
    memory = cpu_manager()
    stop = threading.Event()
    failures: list[BaseException] = []

    def poll() -> None:
        while not stop.is_set():
            try:
                memory.describe()
            except BaseException as e:  # noqa: BLE001 - collected and asserted below
                failures.append(e)

    readers = [threading.Thread(target=poll) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(3):
            pipe = tiny_pipeline(tokenizer)
            memory.prepare_pipeline(pipe, "sd1")
            memory.forget(pipe)
            del pipe
            memory.collect()
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert not failures and memory.live_pipelines() == 0


# -- accelerator only (run on a lent GPU; skipped on CPU-only machines) -----------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.skipif(not ON_GPU, reason="placement and release need an accelerator")
def test_release_moves_weights_off_the_accelerator_and_use_brings_them_back(pipe: StableDiffusionPipeline) -> None:
    memory = MemoryManager(MemoryConfig())
    memory.prepare_pipeline(pipe, "sd1")
    assert pipe.unet.device.type != "cpu"
    assert memory.release(pipe) and pipe.unet.device.type == "cpu"
    with memory.use(pipe):
        assert pipe.unet.device.type != "cpu"
        generate(pipe)


@needs_cuda
def test_cuda_fp16_with_no_half_vae_generates_and_sets_tf32(pipe: StableDiffusionPipeline) -> None:
    memory = MemoryManager(MemoryConfig(device="cuda", no_half_vae=True))
    record = memory.prepare_pipeline(pipe, "sd1")
    assert (record.dtype, record.vae_dtype, record.vae_cast_hooks, record.tf32) == ("float16", "float32", True, True)
    assert pipe.unet.dtype == torch.float16 and pipe.vae.dtype == torch.float32
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    with memory.use(pipe):
        assert torch.isfinite(generate(pipe).float()).all()


@needs_cuda
def test_sdxl_family_holds_a_force_upcast_vae_in_fp32(pipe: StableDiffusionPipeline) -> None:
    memory = MemoryManager(MemoryConfig(device="cuda"))
    assert pipe.vae.config.force_upcast
    record = memory.prepare_pipeline(pipe, "sdxl")
    assert (record.dtype, record.vae_dtype) == ("float16", "float32")
    with memory.use(pipe):
        generate(pipe)


@needs_cuda
@pytest.mark.parametrize(("flag", "offload"), [("medvram", "model"), ("lowvram", "sequential")])
def test_offload_flags_install_diffusers_offload(pipe: StableDiffusionPipeline, flag: str, offload: str) -> None:
    memory = MemoryManager(MemoryConfig(device="cuda", **{flag: True}))
    record = memory.prepare_pipeline(pipe, "sd1")
    assert record.offload == offload
    with memory.use(pipe):
        generate(pipe)
    if offload == "model":
        assert next(pipe.unet.parameters()).device.type == "cpu"  # diffusers put it back after the job
    memory.forget(pipe)


@needs_cuda
def test_real_cuda_oom_frees_vram_and_the_next_job_runs(pipe: StableDiffusionPipeline) -> None:
    memory = MemoryManager(MemoryConfig(device="cuda"))
    memory.prepare_pipeline(pipe, "sd1")
    with pytest.raises(OutOfMemory) as err:
        with memory.use(pipe):
            torch.empty(2**45, dtype=torch.uint8, device="cuda")  # 32 TiB: no GPU has it
    assert "VRAM was free" in err.value.message and "--medvram" in err.value.message
    assert pipe.unet.device.type == "cpu"  # released by the OOM handler
    with memory.use(pipe):
        assert pipe.unet.device.type == "cuda"
        generate(pipe)


@needs_cuda
def test_forget_and_collect_return_the_vram(tokenizer: CLIPTokenizer) -> None:
    memory = MemoryManager(MemoryConfig(device="cuda"))
    memory.collect()
    before = torch.cuda.memory_allocated()
    pipe = tiny_pipeline(tokenizer, ballast_mib=512)
    memory.prepare_pipeline(pipe, "sd1")
    assert torch.cuda.memory_allocated() - before > 200 * MIB  # the fp32 ballast is 256 MiB in fp16
    memory.forget(pipe)
    del pipe
    assert memory.collect() == 0
    assert torch.cuda.memory_allocated() - before < 8 * MIB
    assert torch.cuda.memory_reserved() - torch.cuda.memory_allocated() < 64 * MIB  # the cache was emptied
