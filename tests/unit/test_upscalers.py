"""Upscalers: the A1111-style list, spandrel-loaded tiny models of each ESRGAN-family layout, sizes and passes,
seam-free tiling, alpha, blending, cancel, and a clear error for every bad input. All CPU, all small."""

from __future__ import annotations

import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules.engine.memory import MemoryConfig, MemoryManager, OutOfMemory
from modules.engine.postprocess import (
    UpscaleCancelled,
    UpscalerRegistry,
    blend,
    extra_model_kinds,
    plan_passes,
    target_size,
)
from modules.engine.postprocess.image_modes import split_alpha
from modules.engine.postprocess.tiling import axis_weights, run_tiled, tile_layout
from modules.errors import NotFound, UserError
from modules.model_registry import ModelRegistry, core_kinds
from modules.paths import DataPaths
from tests.fixtures.tiny_upscalers import compact, old_esrgan, rrdbnet

REPO = Path(__file__).resolve().parents[2]


def make_paths(root: Path) -> DataPaths:
    paths = DataPaths(data=root, models=root / "models", embeddings=root / "embeddings", outputs=root / "outputs",
                      extensions=root / "extensions", cache=root / "cache", tmp=root / "tmp")
    paths.ensure()
    return paths


def models_registry(paths: DataPaths) -> ModelRegistry:
    """The app's registry plus the upscaler kinds it needs (`extra_model_kinds`)."""
    registry = ModelRegistry(core_kinds(paths))
    for kind in extra_model_kinds(paths):
        registry.add_kind(kind)
    return registry


def gradient_image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Smooth colour ramps with some texture: enough structure that a seam would show."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x * y) % 256], axis=-1)
    image = Image.fromarray(rgb.astype(np.uint8))
    return image.convert(mode) if mode != "RGB" else image


@pytest.fixture(scope="module")
def memory() -> MemoryManager:
    return MemoryManager(MemoryConfig(device="cpu"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> DataPaths:
    """A data dir whose model folders hold one tiny model of each layout, in .pth and .safetensors."""
    paths = make_paths(tmp_path_factory.mktemp("data"))
    esrgan = paths.model_folder("ESRGAN")
    torch.save(old_esrgan(), esrgan / "4x-tiny-esrgan.pth")
    save_file(compact(), str(esrgan / "4x-tiny-compact.safetensors"))
    real = paths.model_folder("RealESRGAN")
    real.mkdir(parents=True, exist_ok=True)
    torch.save(rrdbnet(4), real / "RealESRGAN_tiny_x4plus.pth")
    save_file(rrdbnet(2), str(real / "RealESRGAN_tiny_x2plus.safetensors"))
    return paths


@pytest.fixture
def upscalers(data: DataPaths, memory: MemoryManager) -> UpscalerRegistry:
    return UpscalerRegistry(models_registry(data), memory)


def bad_folder(tmp_path: Path, memory: MemoryManager, files: dict[str, bytes | dict[str, torch.Tensor]]
               ) -> UpscalerRegistry:
    """An upscaler registry over one folder holding `files` (bytes written as they are, dicts torch.save'd)."""
    paths = make_paths(tmp_path)
    for name, content in files.items():
        target = paths.model_folder("ESRGAN") / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        elif name.endswith(".safetensors"):
            save_file(content, str(target))
        else:
            torch.save(content, target)
    return UpscalerRegistry(models_registry(paths), memory)


# -- the list ----------------------------------------------------------------------------------------------------


def test_importing_the_package_loads_nothing_heavy() -> None:
    code = ("import sys, modules.engine.postprocess; "
            "print(sorted(m for m in ('torch', 'spandrel', 'PIL', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_names_in_a1111_order(upscalers: UpscalerRegistry) -> None:
    assert upscalers.names() == ["None", "Lanczos", "Nearest", "4x-tiny-compact", "4x-tiny-esrgan",
                                 "RealESRGAN_tiny_x2plus", "RealESRGAN_tiny_x4plus"]
    assert upscalers.model_names() == upscalers.names()[3:]


def test_api_list_shape_and_scales(upscalers: UpscalerRegistry, data: DataPaths) -> None:
    listing = {item["name"]: item for item in upscalers.api_list()}
    assert listing["None"] == {"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4}
    assert listing["Lanczos"]["scale"] == listing["Nearest"]["scale"] == 4
    assert {name: item["scale"] for name, item in listing.items() if item["model_path"]} == {
        "4x-tiny-compact": 4, "4x-tiny-esrgan": 4, "RealESRGAN_tiny_x2plus": 2, "RealESRGAN_tiny_x4plus": 4}
    x2 = listing["RealESRGAN_tiny_x2plus"]
    assert x2["model_name"] == "RealESRGAN"
    assert x2["model_path"] == str(data.model_folder("RealESRGAN") / "RealESRGAN_tiny_x2plus.safetensors")
    assert set(x2) == {"name", "model_name", "model_path", "model_url", "scale"}


def test_unknown_upscaler_lists_the_choices(upscalers: UpscalerRegistry) -> None:
    with pytest.raises(NotFound, match="unknown upscaler 'nope'.*4x-tiny-esrgan"):
        upscalers.upscale(gradient_image(8, 8), "nope", scale=2)
    assert upscalers.find("lanczos").name == "Lanczos"  # case-insensitive, as A1111's lookups


def test_extra_user_folder_is_listed_and_runs(tmp_path: Path, upscalers: UpscalerRegistry) -> None:
    folder = tmp_path / "my-upscalers"
    folder.mkdir()
    save_file(compact(2), str(folder / "2x-mine.safetensors"))
    assert "2x-mine" not in upscalers.names()
    upscalers.set_extra_folders([folder])
    assert "2x-mine" in upscalers.names()
    assert upscalers.scale_of("2x-mine") == 2
    assert upscalers.upscale(gradient_image(10, 6), "2x-mine", multiple_of=1).size == (20, 12)


def test_a_file_missing_a_kind_does_not_break_listing(tmp_path: Path, memory: MemoryManager) -> None:
    paths = make_paths(tmp_path)
    torch.save(old_esrgan(), paths.model_folder("ESRGAN") / "4x-a.pth")
    only_core = UpscalerRegistry(ModelRegistry(core_kinds(paths)), memory)  # no RealESRGAN/SwinIR/DAT/HAT kinds
    assert only_core.names() == ["None", "Lanczos", "Nearest", "4x-a"]


# -- sizes and passes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["4x-tiny-esrgan", "4x-tiny-compact", "RealESRGAN_tiny_x4plus"])
def test_native_scale_4(upscalers: UpscalerRegistry, name: str) -> None:
    out = upscalers.upscale(gradient_image(24, 16), name, scale=4)
    assert out.size == (96, 64) and out.mode == "RGB"


def test_x2_model_from_safetensors(upscalers: UpscalerRegistry) -> None:
    assert upscalers.upscale(gradient_image(24, 16), "RealESRGAN_tiny_x2plus").size == (48, 32)


def test_x4_model_asked_for_2x_runs_once_then_resizes(upscalers: UpscalerRegistry) -> None:
    seen: list[tuple[int, int]] = []
    out = upscalers.upscale(gradient_image(40, 24), "4x-tiny-compact", scale=2, tile=0,
                            progress=lambda done, total: seen.append((done, total)))
    assert out.size == (80, 48)
    assert seen == [(1, 1)]  # one pass, one tile


def test_explicit_size_is_exact(upscalers: UpscalerRegistry) -> None:
    assert upscalers.upscale(gradient_image(30, 20), "4x-tiny-compact", size=(100, 50)).size == (100, 50)


def test_8x_with_a_4x_model_runs_two_passes(upscalers: UpscalerRegistry) -> None:
    seen: list[tuple[int, int]] = []
    out = upscalers.upscale(gradient_image(8, 8), "4x-tiny-compact", scale=8, tile=0,
                            progress=lambda done, total: seen.append((done, total)))
    assert out.size == (64, 64)
    assert seen == [(1, 2), (2, 2)]


def test_scaled_target_rounds_down_to_8_like_a1111(upscalers: UpscalerRegistry) -> None:
    image = gradient_image(33, 21)
    assert upscalers.upscale(image, "4x-tiny-compact", scale=4).size == (128, 80)
    assert upscalers.upscale(image, "4x-tiny-compact", scale=4, multiple_of=1).size == (132, 84)
    assert target_size((3, 3), 2, None) == (8, 8)  # never rounded to nothing


def test_plan_passes_follows_a1111() -> None:
    assert plan_passes((10, 10), (40, 40), 4, 4) == [(10, 10)]
    assert plan_passes((10, 10), (16, 16), 4, 1.6) == [(10, 10)]
    assert plan_passes((10, 10), (80, 80), 4, 8) == [(10, 10), (40, 40)]
    assert plan_passes((10, 10), (10, 10), 4, 1) == [(10, 10)]  # scale 1 still runs once (A1111's 1x models)
    assert plan_passes((1, 1), (10_000, 10_000), 2, 10_000) == [(1, 1), (2, 2), (4, 4)]  # at most 3 passes


@pytest.mark.parametrize("name,resample", [("Lanczos", Image.Resampling.LANCZOS),
                                           ("Nearest", Image.Resampling.NEAREST)])
def test_pil_upscalers(upscalers: UpscalerRegistry, name: str, resample: Image.Resampling) -> None:
    image = gradient_image(30, 20)
    out = upscalers.upscale(image, name, scale=2.5)
    assert out.size == (72, 48)
    assert np.array_equal(np.asarray(out), np.asarray(image.resize((72, 48), resample)))
    assert upscalers.upscale(image, name, size=(31, 77)).size == (31, 77)
    assert upscalers.upscale(image, name).size == (120, 80)  # A1111's Extras default of 4


def test_none_returns_the_image(upscalers: UpscalerRegistry) -> None:
    image = gradient_image(30, 20, "RGBA")
    out = upscalers.upscale(image, "None", scale=4)
    assert out.size == image.size and out.mode == "RGBA" and out is not image


# -- tiling ------------------------------------------------------------------------------------------------------


def test_tile_layout_covers_the_axis_evenly() -> None:
    assert tile_layout(100, 0, 8) == (100, [0])
    assert tile_layout(100, 192, 8) == (100, [0])
    assert tile_layout(192, 128, 8) == (100, [0, 92])  # not 128-pixel tiles overlapping by 64
    assert tile_layout(100, 40, 8) == (39, [0, 30, 61])
    for length in range(2, 300, 7):
        for tile, overlap in [(40, 8), (16, 15), (32, 0), (33, 4), (192, 8), (64, 32)]:
            size, starts = tile_layout(length, tile, overlap)
            assert size <= max(tile, 1) or starts == [0]
            assert starts[0] == 0 and starts[-1] + size == length
            assert all(size - (b - a) >= overlap for a, b in zip(starts, starts[1:], strict=False))
            assert all(b > a for a, b in zip(starts, starts[1:], strict=False))


def test_tile_layout_aligns_to_the_models_multiple() -> None:
    assert tile_layout(80, 32, 12, 4) == (32, [0, 16, 32, 48])
    assert tile_layout(82, 32, 12, 4) == (32, [0, 16, 36, 50])  # the last tile stays flush with the edge
    for length in range(2, 200, 5):
        for tile, overlap, multiple in [(32, 12, 4), (64, 8, 16), (16, 15, 4), (8, 7, 8), (192, 8, 8)]:
            size, starts = tile_layout(length, tile, overlap, multiple)
            assert starts[0] == 0 and starts[-1] + size == length
            assert size == length or size % multiple == 0
            assert all(s % multiple == 0 for s in starts[:-1])
            assert all(size - (b - a) >= overlap for a, b in zip(starts, starts[1:], strict=False))
            assert all(b > a for a, b in zip(starts, starts[1:], strict=False))


def test_feather_weights_sum_to_one_where_two_tiles_meet() -> None:
    left, right = axis_weights(0, 40, 72, 8, 2), axis_weights(32, 40, 72, 8, 2)
    overlap = left[-16:] + right[:16]
    assert torch.allclose(overlap, torch.ones(16))
    assert left[0] == 1 and right[-1] == 1  # no ramp at the image border
    assert bool((left > 0).all() and (right > 0).all())


@pytest.mark.parametrize("name", ["4x-tiny-compact", "4x-tiny-esrgan", "RealESRGAN_tiny_x2plus"])
def test_tiled_matches_untiled(upscalers: UpscalerRegistry, name: str) -> None:
    image = gradient_image(80, 56)
    tiles: list[tuple[int, int]] = []
    whole = np.asarray(upscalers.upscale(image, name, tile=0), dtype=np.float32)
    tiled = np.asarray(upscalers.upscale(image, name, tile=32, overlap=12,
                                         progress=lambda d, t: tiles.append((d, t))), dtype=np.float32)
    assert tiles[-1] == (12, 12)  # 4 columns x 3 rows
    diff = np.abs(whole - tiled)
    # Measured with these weights: mean 0.04-0.09 and max 2-5 levels of 255 at overlap 12, against mean 0.3-0.4
    # and max 16-33 with no overlap, i.e. visible seams.
    assert diff.mean() < 0.15, diff.mean()
    assert diff.max() <= 8, diff.max()


def test_feathering_beats_plain_averaging(upscalers: UpscalerRegistry) -> None:
    """The reason for the ramps: against the untiled result, feathered tiles are closer than A1111-style equal
    weights over the same tiles."""
    model = upscalers.load("4x-tiny-esrgan")
    image = torch.from_numpy(np.array(gradient_image(64, 48))).permute(2, 0, 1)[None].float() / 255
    whole = model.descriptor(image)
    feathered = run_tiled(model.descriptor, image, 4, 24, 8, torch.device("cpu"), torch.float32)
    flat = run_tiled(model.descriptor, image, 4, 24, 0, torch.device("cpu"), torch.float32)  # no overlap at all
    assert (feathered - whole).abs().mean() < (flat - whole).abs().mean()


def test_bad_tile_settings(upscalers: UpscalerRegistry) -> None:
    with pytest.raises(UserError, match="overlap"):
        upscalers.upscale(gradient_image(40, 40), "4x-tiny-compact", tile=16, overlap=16)
    with pytest.raises(UserError, match="tile size"):
        upscalers.upscale(gradient_image(40, 40), "4x-tiny-compact", tile=-1)
    with pytest.raises(UserError, match="not both"):
        upscalers.upscale(gradient_image(40, 40), "Lanczos", scale=2, size=(80, 80))


# -- modes, blending, cancel -------------------------------------------------------------------------------------


def test_rgba_keeps_alpha(upscalers: UpscalerRegistry) -> None:
    image = gradient_image(24, 16, "RGBA")
    alpha = np.zeros((16, 24), dtype=np.uint8)
    alpha[:, 12:] = 255
    image.putalpha(Image.fromarray(alpha))
    for name in ("4x-tiny-compact", "Lanczos", "Nearest"):
        out = upscalers.upscale(image, name, scale=4)
        assert out.mode == "RGBA" and out.size == (96, 64)
        got = np.asarray(out.getchannel("A"))
        assert got[:, :40].max() < 20 and got[:, 56:].min() > 235, name  # transparent left, opaque right


@pytest.mark.parametrize("mode", ["LA", "P", "CMYK", "L", "I;16"])
def test_other_modes_convert(upscalers: UpscalerRegistry, mode: str) -> None:
    image = gradient_image(16, 12, mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = Image.fromarray((np.asarray(image).astype(np.uint16) * 257))  # full 16-bit range
        assert image.mode in ("I;16", "I")
    out = upscalers.upscale(image, "4x-tiny-compact", scale=4)
    assert out.size == (64, 48)
    assert out.mode == ("RGBA" if mode == "LA" else "RGB")


def test_16_bit_is_scaled_not_clipped() -> None:
    image = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    rgb, alpha = split_alpha(image)
    assert alpha is None and rgb.mode == "RGB"
    assert np.asarray(rgb)[0, :, 0].tolist() == [0, 128, 255]


def test_blend_visibility() -> None:
    first = Image.new("RGB", (8, 8), (0, 0, 0))
    second = Image.new("RGB", (8, 8), (200, 100, 50))
    assert np.asarray(blend(first, second, 0.0)).max() == 0
    assert np.asarray(blend(first, second, 1.0))[0, 0].tolist() == [200, 100, 50]
    assert np.asarray(blend(first, second, 0.5))[0, 0].tolist() == [100, 50, 25]
    assert blend(first, Image.new("RGBA", (16, 16)), 0.5).size == (8, 8)  # resized and mode-matched
    with pytest.raises(UserError, match="visibility"):
        blend(first, second, 1.5)


def test_blend_two_upscalers(upscalers: UpscalerRegistry) -> None:
    image = gradient_image(20, 12)
    one = upscalers.upscale(image, "4x-tiny-esrgan", scale=2)
    two = upscalers.upscale(image, "Lanczos", scale=2)
    mixed = np.asarray(blend(one, two, 0.5), dtype=np.int16)
    expected = (np.asarray(one, dtype=np.int16) + np.asarray(two, dtype=np.int16)) / 2
    assert np.abs(mixed - expected).max() <= 1


def test_cancel_between_tiles(upscalers: UpscalerRegistry) -> None:
    calls: list[int] = []

    def stop_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    done: list[int] = []
    with pytest.raises(UpscaleCancelled):
        upscalers.upscale(gradient_image(64, 64), "4x-tiny-compact", tile=16, overlap=4, check=stop_after_two,
                          progress=lambda d, t: done.append(d))
    assert done == [1, 2]  # two tiles ran, the third never started

    class Cancelled(Exception):
        pass

    def raising() -> None:
        raise Cancelled  # a job context's check() raises its own exception; it passes through unchanged

    with pytest.raises(Cancelled):
        upscalers.upscale(gradient_image(64, 64), "4x-tiny-compact", tile=16, check=raising)


# -- loading and errors ------------------------------------------------------------------------------------------


def test_one_model_at_a_time(upscalers: UpscalerRegistry) -> None:
    first = upscalers.load("4x-tiny-esrgan")
    assert upscalers.load("4x-tiny-esrgan") is first  # cached
    gone = weakref.ref(first.descriptor.model)
    del first
    upscalers.load("4x-tiny-compact")
    assert upscalers.loaded_name() == "4x-tiny-compact"
    assert gone() is None  # the previous network was freed on switch
    upscalers.unload()
    assert upscalers.loaded_name() is None


def test_out_of_memory_unloads_the_model(upscalers: UpscalerRegistry, memory: MemoryManager) -> None:
    image = gradient_image(48, 48)
    upscalers.load("4x-tiny-compact")
    memory.inject_oom(1)  # the next tile fails as a CUDA OOM would
    with pytest.raises(OutOfMemory):
        upscalers.upscale(image, "4x-tiny-compact", tile=16)
    assert upscalers.loaded_name() is None
    assert upscalers.upscale(image, "4x-tiny-compact", tile=16).size == (192, 192)  # the next try works


def test_runs_in_fp32_on_cpu(upscalers: UpscalerRegistry) -> None:
    loaded = upscalers.load("RealESRGAN_tiny_x4plus")
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert loaded.architecture == "ESRGAN" and loaded.scale == 4


def test_corrupt_file(tmp_path: Path, memory: MemoryManager) -> None:
    good = tmp_path / "good.pth"
    torch.save(old_esrgan(), good)
    registry = bad_folder(tmp_path, memory, {"4x-garbage.pth": b"\x00not a pickle" * 100,
                                             "4x-truncated.pth": good.read_bytes()[:5000],
                                             "4x-empty.safetensors": b""})
    for name, file in [("4x-garbage", "4x-garbage.pth"), ("4x-truncated", "4x-truncated.pth"),
                       ("4x-empty", "4x-empty.safetensors")]:
        with pytest.raises(UserError, match=f"'{file}' in .* is corrupt, truncated or not a model file"):
            registry.upscale(gradient_image(8, 8), name)
    assert registry.scale_of("4x-garbage") == 4  # listed anyway, scale guessed from the name
    assert registry.loaded_name() is None


def test_not_an_upscaler(tmp_path: Path, memory: MemoryManager) -> None:
    random_dict = {"encoder.weight": torch.randn(4, 4), "decoder.bias": torch.randn(4)}
    registry = bad_folder(tmp_path, memory, {"random.pth": random_dict,
                                             "1x-restore.safetensors": compact(1),
                                             "bad-grow.pth": rrdbnet(4, num_grow_ch=8)})
    with pytest.raises(UserError, match="'random.pth' is not an upscaler model this app recognises"):
        registry.upscale(gradient_image(8, 8), "random")
    with pytest.raises(UserError, match=r"'1x-restore' \(1x-restore.safetensors\) is not an upscaler.*restoration"):
        registry.upscale(gradient_image(8, 8), "1x-restore")
    with pytest.raises(UserError, match="'bad-grow.pth' looks like a known architecture"):
        registry.upscale(gradient_image(8, 8), "bad-grow")
    with pytest.raises(UserError, match="built-in upscaler"):
        registry.load("Lanczos")


def test_too_large(upscalers: UpscalerRegistry) -> None:
    with pytest.raises(UserError, match="input image would be 100x100 = 0.0 megapixels, over the limit"):
        upscalers.upscale(gradient_image(100, 100), "Lanczos", scale=2, max_pixels=5000)
    with pytest.raises(UserError, match="upscaled image would be 200x200"):
        upscalers.upscale(gradient_image(50, 50), "4x-tiny-compact", scale=4, max_pixels=20_000)
    # 2x output fits, but the 4x model's own 200x200 output does not
    with pytest.raises(UserError, match="4x output of '4x-tiny-compact'"):
        upscalers.upscale(gradient_image(50, 50), "4x-tiny-compact", scale=2, max_pixels=20_000)
