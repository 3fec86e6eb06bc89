"""Loading the SadTalker networks as a bundle from a `models/SadTalker` folder (talking_head.checkpoints).

Uses the tiny random-weight files of tests/fixtures/tiny_sadtalker.py, written under the official names, through
the real `load_nets` path: file choice, safetensors/pickle reading, architecture config, strict loading.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.fixtures.tiny_sadtalker import TINY_CONFIG, write_tiny_legacy_set, write_tiny_sadtalker

from ._pkg import REPO_ROOT, submodule

checkpoints = submodule("checkpoints")
weights = submodule("weights")
nets_pkg = submodule("nets")
render_chain = submodule("render_chain")

ST_256 = "SadTalker_V0.0.2_256.safetensors"
ST_512 = "SadTalker_V0.0.2_512.safetensors"
MAP_CROP = "mapping_00229-model.pth.tar"
MAP_FULL = "mapping_00109-model.pth.tar"
LEGACY = ["auido2pose_00140-model.pth", "auido2exp_00300-model.pth", "facevid2vid_00189-model.pth.tar", "epoch_20.pth"]
MODES = ["crop", "extcrop", "resize", "full", "extfull"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sadtalker(tmp_path_factory.mktemp("sadtalker"), sizes=(256, 512), seed=0)


@pytest.fixture(scope="module")
def tiny_nets(tiny_folder: Path) -> Callable[[int, str], object]:
    cache: dict[tuple[int, str], object] = {}

    def load(size: int, preprocess: str) -> object:
        if (size, preprocess) not in cache:
            cache[(size, preprocess)] = checkpoints.load_nets(tiny_folder, size, preprocess)
        return cache[(size, preprocess)]

    return load


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def _copy_mappings(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in (MAP_CROP, MAP_FULL):
        shutil.copy(src / name, dst / name)


def _rewrite_256(src: Path, dst: Path, edit: Callable[[dict, dict], None]) -> Path:
    """A copy of the tiny folder (256 only) whose safetensors went through `edit(tensors, metadata)`."""
    _copy_mappings(src, dst)
    tensors, metadata = checkpoints.read_safetensors_with_metadata(src / ST_256)
    edit(tensors, metadata)
    save_file(tensors, str(dst / ST_256), metadata=metadata)
    return dst


# --------------------------------------------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------------------------------------------


def test_official_file_names() -> None:
    files = checkpoints.SADTALKER_FILES
    assert set(files.values()) == {ST_256, ST_512, MAP_CROP, MAP_FULL, *LEGACY}
    assert checkpoints.legacy_files() == LEGACY
    assert checkpoints.LEGACY_FILES["kp_extractor"] == checkpoints.LEGACY_FILES["generator"] == LEGACY[2]
    assert checkpoints.LEGACY_FILES["face_3drecon"] == "epoch_20.pth"


@pytest.mark.parametrize("size", [256, 512])
@pytest.mark.parametrize("preprocess", MODES)
def test_required_and_missing_files_in_an_empty_folder(tmp_path: Path, size: int, preprocess: str) -> None:
    mapping = MAP_FULL if "full" in preprocess else MAP_CROP
    expected = [ST_256 if size == 256 else ST_512, mapping]
    assert checkpoints.required_files(size, preprocess) == expected
    assert checkpoints.missing_files(tmp_path, size, preprocess) == expected
    assert checkpoints.missing_files(tmp_path / "does-not-exist", size, preprocess) == expected


@pytest.mark.parametrize(
    ("present", "size", "preprocess", "missing"),
    [
        ([ST_256, MAP_CROP], 256, "crop", []),
        ([ST_256, MAP_CROP], 256, "full", [MAP_FULL]),
        ([ST_256, MAP_CROP], 512, "resize", [ST_512]),
        ([ST_256, MAP_FULL], 512, "extfull", [ST_512]),
        ([ST_512, MAP_CROP, MAP_FULL], 256, "extcrop", [ST_256]),
        ([ST_512, MAP_FULL], 512, "full", []),
        # the legacy set stands in for the 256 safetensors only
        ([*LEGACY, MAP_CROP], 256, "crop", []),
        ([*LEGACY, MAP_FULL], 256, "crop", [MAP_CROP]),
        ([*LEGACY, MAP_CROP], 512, "crop", [ST_512]),
        ([*LEGACY[:3], MAP_CROP], 256, "crop", [ST_256]),  # incomplete legacy set: ask for the safetensors
    ],
)
def test_missing_files(tmp_path: Path, present: list[str], size: int, preprocess: str, missing: list[str]) -> None:
    assert checkpoints.missing_files(_touch(tmp_path, *present), size, preprocess) == missing


def test_bad_choices_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="256 or 512"):
        checkpoints.required_files(384, "crop")
    with pytest.raises(ValueError, match="unknown preprocess mode"):
        checkpoints.missing_files(tmp_path, 256, "wide")


def test_missing_files_error_names_files_and_folder(tmp_path: Path) -> None:
    _touch(tmp_path, MAP_CROP)
    with pytest.raises(checkpoints.MissingCheckpointError) as caught:
        checkpoints.load_nets(tmp_path, 512, "full")
    assert caught.value.missing == [ST_512, MAP_FULL]
    assert caught.value.folder == tmp_path
    message = str(caught.value)
    assert ST_512 in message and MAP_FULL in message and str(tmp_path) in message and MAP_CROP not in message
    assert isinstance(caught.value, ValueError)


# --------------------------------------------------------------------------------------------------------------
# Loading the tiny files
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [256, 512])
@pytest.mark.parametrize(("preprocess", "kind", "width"), [("crop", "crop", 70), ("full", "full", 73)])
def test_load_tiny_nets(tiny_folder: Path, tiny_nets: Callable, size: int, preprocess: str, kind: str, width: int):
    bundle = tiny_nets(size, preprocess)
    assert bundle.size == size and bundle.preprocess_kind == kind
    assert bundle.mapping.first[0].in_channels == width
    assert bundle.mapping.first[0].out_channels == TINY_CONFIG[f"mapping_{kind}"]["descriptor_nc"]
    main, mapping = (ST_256 if size == 256 else ST_512), (MAP_FULL if kind == "full" else MAP_CROP)
    assert [p.name for p in bundle.files] == [main, mapping]
    assert isinstance(bundle.generator, nets_pkg.OcclusionAwareSPADEGenerator)
    assert isinstance(bundle.face_3drecon, nets_pkg.FaceReconNet)
    for name, module in bundle.modules().items():
        assert not module.training, name
        tensors = [*module.parameters(), *module.buffers()]
        assert all(t.device.type == "cpu" and not t.is_meta for t in tensors), name
    # the tiny renderer carries its config; the other networks are real size
    assert bundle.generator.decoder.num_middle_blocks == 1
    assert bundle.kp_extractor.kp.in_channels == TINY_CONFIG["kp_extractor"]["block_expansion"]
    real = weights.param_specs_from_module(nets_pkg.build_network("face_3drecon", "meta"))
    assert weights.param_specs_from_module(bundle.face_3drecon) == real
    expected_bytes = sum(
        t.numel() * t.element_size() for m in bundle.modules().values() for t in (*m.parameters(), *m.buffers())
    )
    assert bundle.parameters_bytes() == expected_bytes > 0
    assert bundle.to("cpu") is bundle and bundle.device.type == "cpu"
    renderer = bundle.renderer()
    assert renderer.generator is bundle.generator and renderer.mapping is bundle.mapping


def test_sizes_hold_different_renderers(tiny_nets: Callable) -> None:
    a, b = tiny_nets(256, "crop"), tiny_nets(512, "crop")
    assert not torch.equal(a.generator.first.conv.weight, b.generator.first.conv.weight)
    assert torch.equal(a.audio2exp.mapping1.weight, b.audio2exp.mapping1.weight)


@pytest.mark.parametrize(("size", "preprocess"), [(256, "crop"), (512, "extfull")])
def test_render_one_frame_with_tiny_nets(tiny_nets: Callable, size: int, preprocess: str) -> None:
    bundle = tiny_nets(size, preprocess)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((1, 3, size, size), dtype=np.float32))
    first = (0.1 * rng.standard_normal((1, 73))).astype(np.float32)
    rows = (0.1 * rng.standard_normal((3, 70))).astype(np.float32)
    setup = render_chain.prepare(bundle.renderer(), image, first, rows, preprocess=preprocess)
    chunks = list(render_chain.iter_frames(bundle.renderer(), setup, batch_size=1, start=1, stop=2))
    assert [start for start, _ in chunks] == [1]
    frames = chunks[0][1]
    assert frames.shape == (1, 3, size, size)
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    assert frames.std() > 0


def test_legacy_set_loads_for_256_only(tiny_folder: Path, tiny_nets: Callable, tmp_path: Path) -> None:
    write_tiny_legacy_set(tmp_path, seed=0)
    _copy_mappings(tiny_folder, tmp_path)
    bundle = checkpoints.load_nets(tmp_path, 256, "crop")
    assert [p.name for p in bundle.files] == [*LEGACY, MAP_CROP]
    # same seeds as the tiny 256 safetensors, so the same values
    reference = tiny_nets(256, "crop")
    for name in ("kp_extractor", "generator", "audio2pose", "face_3drecon"):
        ours, theirs = bundle.modules()[name].state_dict(), reference.modules()[name].state_dict()
        assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    with pytest.raises(checkpoints.MissingCheckpointError) as caught:
        checkpoints.load_nets(tmp_path, 512, "crop")
    assert caught.value.missing == [ST_512]


# --------------------------------------------------------------------------------------------------------------
# Files that do not fit
# --------------------------------------------------------------------------------------------------------------


def test_renamed_key_names_file_and_key(tiny_folder: Path, tmp_path: Path) -> None:
    def rename(tensors: dict, metadata: dict) -> None:
        tensors["generator.first.conv.weight_old"] = tensors.pop("generator.first.conv.weight")

    folder = _rewrite_256(tiny_folder, tmp_path, rename)
    with pytest.raises(weights.CheckpointMismatchError) as caught:
        checkpoints.load_nets(folder, 256, "crop")
    message = str(caught.value)
    assert ST_256 in message and "generator" in message
    assert "missing key(s): 'first.conv.weight'" in message
    assert "unexpected key(s): 'first.conv.weight_old'" in message


def test_reshaped_tensor_names_file_and_key(tiny_folder: Path, tmp_path: Path) -> None:
    def reshape(tensors: dict, metadata: dict) -> None:
        weight = tensors["kp_extractor.kp.weight"]
        tensors["kp_extractor.kp.weight"] = torch.zeros(weight.shape[0] + 1, *weight.shape[1:])

    folder = _rewrite_256(tiny_folder, tmp_path, reshape)
    with pytest.raises(weights.CheckpointMismatchError, match=r"'kp\.weight' is \[16, 4, 3, 3, 3\] in the file") as c:
        checkpoints.load_nets(folder, 256, "crop")
    assert ST_256 in str(c.value) and "kp_extractor" in str(c.value)


def test_stray_key_is_refused(tiny_folder: Path, tmp_path: Path) -> None:
    def add(tensors: dict, metadata: dict) -> None:
        tensors["he_estimator.fc.weight"] = torch.zeros(2)

    folder = _rewrite_256(tiny_folder, tmp_path, add)
    with pytest.raises(weights.CheckpointMismatchError, match="he_estimator.fc.weight") as caught:
        checkpoints.load_nets(folder, 256, "crop")
    assert ST_256 in str(caught.value)


def test_tiny_weights_do_not_fit_the_official_config(tiny_folder: Path, tmp_path: Path) -> None:
    """Strict stays strict: without its config a tiny file is built as the official networks and refused."""

    def drop_config(tensors: dict, metadata: dict) -> None:
        del metadata[checkpoints.CONFIG_METADATA_KEY]

    folder = _rewrite_256(tiny_folder, tmp_path, drop_config)
    with pytest.raises(weights.CheckpointMismatchError, match="shape mismatch") as caught:
        checkpoints.load_nets(folder, 256, "crop")
    assert ST_256 in str(caught.value) and "kp_extractor" in str(caught.value)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        # kp_extractor (built first) keeps its tiny config, so the generator's bad option is what fails
        (json.dumps({"kp_extractor": TINY_CONFIG["kp_extractor"], "generator": {"nope": 1}}), "unknown option"),
        ('{"mapping_crop": {"descriptor_nc": 16}}', "does not hold"),
        ('{"generator": 3}', "option objects"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_config_names_the_file(tiny_folder: Path, tmp_path: Path, config: str, match: str) -> None:
    def set_config(tensors: dict, metadata: dict) -> None:
        metadata[checkpoints.CONFIG_METADATA_KEY] = config

    folder = _rewrite_256(tiny_folder, tmp_path, set_config)
    with pytest.raises(weights.CheckpointMismatchError, match=match) as caught:
        checkpoints.load_nets(folder, 256, "crop")
    assert ST_256 in str(caught.value)


def test_mapping_file_of_the_wrong_variant(tiny_folder: Path, tmp_path: Path) -> None:
    _copy_mappings(tiny_folder, tmp_path)
    shutil.copy(tiny_folder / ST_256, tmp_path / ST_256)
    blob = torch.load(tmp_path / MAP_FULL, weights_only=True)
    blob["sdstudio_config"] = {"mapping_crop": blob["sdstudio_config"]["mapping_full"]}
    torch.save(blob, tmp_path / MAP_CROP)  # a 73-input MappingNet under the 70-input name
    with pytest.raises(weights.CheckpointMismatchError, match=r"'first\.0\.weight' is \[16, 73, 7\]") as caught:
        checkpoints.load_nets(tmp_path, 256, "crop")
    assert MAP_CROP in str(caught.value)


@pytest.mark.parametrize("name", [ST_256, MAP_CROP])
@pytest.mark.parametrize("keep", [0.5, 20])
def test_truncated_file_names_the_file(tiny_folder: Path, tmp_path: Path, name: str, keep: float) -> None:
    for other in (ST_256, MAP_CROP):
        shutil.copy(tiny_folder / other, tmp_path / other)
    data = (tiny_folder / name).read_bytes()
    (tmp_path / name).write_bytes(data[: int(len(data) * keep) if keep < 1 else int(keep)])
    with pytest.raises(checkpoints.UnreadableCheckpointError, match="truncated or corrupt") as caught:
        checkpoints.load_nets(tmp_path, 256, "crop")
    assert str(caught.value).startswith(name + ":")


def test_garbage_file_names_the_file(tiny_folder: Path, tmp_path: Path) -> None:
    _copy_mappings(tiny_folder, tmp_path)
    (tmp_path / ST_256).write_bytes(b"<html>404 Not Found</html>" * 10)
    with pytest.raises(checkpoints.UnreadableCheckpointError, match=ST_256):
        checkpoints.load_nets(tmp_path, 256, "crop")


def test_unsafe_pickle_is_refused_with_a_clear_error(tiny_folder: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_folder / ST_256, tmp_path / ST_256)
    blob = torch.load(tiny_folder / MAP_CROP, weights_only=True)
    blob["opt"] = argparse.Namespace(lr=1e-4)  # training scripts pickle such objects; a safe load refuses them
    torch.save(blob, tmp_path / MAP_CROP)
    with pytest.raises(checkpoints.UnreadableCheckpointError, match="argparse.Namespace") as caught:
        checkpoints.load_nets(tmp_path, 256, "crop")
    assert str(caught.value).startswith(MAP_CROP + ":")


# --------------------------------------------------------------------------------------------------------------
# Architecture config in build_network
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("network", list(weights.ALL_NETWORKS))
def test_empty_config_is_the_official_layout(network: str) -> None:
    official = weights.param_specs_from_module(nets_pkg.build_network(network, "meta"))
    assert weights.param_specs_from_module(nets_pkg.build_network(network, "meta", {})) == official


def test_config_reaches_the_generator_inner_widths() -> None:
    config = TINY_CONFIG["generator"]
    generator = nets_pkg.build_network("generator", "meta", config)
    dense = generator.dense_motion_network
    assert dense.hourglass.encoder.down_blocks[0].conv.out_channels == 2  # min(max_features 2, 1 * 2)
    assert dense.compress.out_channels == 1
    assert generator.decoder.fc.in_channels == 8  # block_expansion 2 * 2**2
    assert generator.decoder.up_1.conv_1.weight_orig.shape[0] == 2
    assert generator.decoder.up_1.norm_0.mlp_shared[0].out_channels == 2
    with pytest.raises(ValueError, match="config for generator"):
        nets_pkg.build_network("generator", "meta", {"max_features": 100})
    with pytest.raises(ValueError, match="ExpNet takes no architecture options"):
        nets_pkg.build_network("audio2exp", "meta", {"width": 2})
    with pytest.raises(ValueError, match="unknown option"):
        nets_pkg.build_network("mapping_full", "meta", {"coeff_nc": 70})


def test_importing_checkpoints_stays_cheap() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from tests.sadtalker._pkg import submodule; "
        "submodule('checkpoints'); print(sorted(m for m in ('torch', 'safetensors') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO_ROOT)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
