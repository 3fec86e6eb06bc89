"""Face restoration: the A1111 names from the folder, detect -> align -> restore -> paste with injected landmarks,
visibility, alpha, notes, and a clear error for every missing or wrong file. Real architectures with random
weights where they are small (RestoreFormer, RetinaFace, ParseNet); a stand-in network elsewhere. All CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from modules.engine.memory import MemoryConfig, MemoryManager, OutOfMemory
from modules.engine.postprocess.faces import (
    CODEFORMER_NOTE,
    NO_FACE_NOTE,
    FaceRestoreCancelled,
    FaceRestorers,
    ParseNetParser,
    RetinaFaceDetector,
)
from modules.engine.postprocess.faces import networks as networks_module
from modules.engine.postprocess.faces.detect import FFHQ_TEMPLATE, align_face
from modules.engine.postprocess.faces.parse import parsing_mask
from modules.engine.postprocess.faces.restorers import ZERO_VISIBILITY_NOTE
from modules.errors import NotFound, UserError
from modules.model_registry import ModelRegistry, core_kinds
from modules.paths import DataPaths
from modules.settings.core import core_sections
from tests.fixtures.tiny_faces import (
    EllipseParser,
    FixedDetector,
    StandInLoader,
    face_image,
    full_gfpgan,
    random_parsenet,
    random_retinaface,
    save,
    template_landmarks,
    tiny_restoreformer,
)
from tests.fixtures.tiny_upscalers import old_esrgan

REPO = Path(__file__).resolve().parents[2]
SETTINGS = {"face_restoration_model": "GFPGAN", "code_former_weight": 0.5, "face_restoration_unload": False}
# face_image()'s face: the 512 crop maps to 128x128 pixels at (60, 40).
CROP = (60, 40, 188, 168)


@pytest.fixture(scope="module")
def memory() -> MemoryManager:
    return MemoryManager(MemoryConfig(device="cpu"))


def make_registry(root: Path) -> tuple[ModelRegistry, Path]:
    paths = DataPaths(data=root, models=root / "models", embeddings=root / "embeddings", outputs=root / "outputs",
                      extensions=root / "extensions", cache=root / "cache", tmp=root / "tmp")
    paths.ensure()
    folder = paths.model_folder("GFPGAN")
    folder.mkdir(parents=True, exist_ok=True)
    return ModelRegistry(core_kinds(paths)), folder


def restorers(tmp_path: Path, memory: MemoryManager, files: dict[str, Any] | None = None, *,
              detector: Any = "fixed", parser: Any = "ellipse", loader: Any = None,
              settings: dict[str, Any] | None = None) -> tuple[FaceRestorers, Path]:
    """FaceRestorers over a fresh models/GFPGAN holding `files` (bytes written as is, dicts torch.save'd)."""
    models, folder = make_registry(tmp_path)
    for name, content in (files or {}).items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            save(content, folder / name)
    values = {**SETTINGS, **(settings or {})}
    _, points = face_image()
    return FaceRestorers(
        models, memory, values.__getitem__,
        detector=FixedDetector([points]) if detector == "fixed" else detector,
        parser=EllipseParser() if parser == "ellipse" else parser,
        load_model=loader,
    ), folder


def rgb_image() -> Image.Image:
    array, _ = face_image()
    return Image.fromarray(array)


def outside(array: np.ndarray, box: tuple[int, int, int, int] = CROP, margin: int = 3) -> np.ndarray:
    """The pixels outside `box` grown by `margin`, flattened."""
    keep = np.ones(array.shape[:2], dtype=bool)
    x0, y0, x1, y1 = box
    keep[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = False
    return array[keep]


# -- the list ----------------------------------------------------------------------------------------------------


def test_importing_the_package_loads_nothing_heavy() -> None:
    code = ("import sys, modules.engine.postprocess.faces; print(sorted(m for m in "
            "('torch', 'spandrel', 'facexlib', 'cv2', 'PIL', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_names_and_api_list_follow_the_folder(tmp_path: Path, memory: MemoryManager,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    faces, folder = restorers(tmp_path, memory, {"detection_Resnet50_Final.pth": b"x", "parsing_parsenet.pth": b"x"})
    assert faces.names() == [] and faces.api_list() == []  # facexlib's helpers are never listed

    (folder / "GFPGANv1.3.pth").write_bytes(b"x")
    faces.refresh()
    assert faces.names() == ["GFPGAN"]
    assert faces.find("gfpgan").path.name == "GFPGANv1.3.pth"
    (folder / "GFPGANv1.4.pth").write_bytes(b"x")
    (folder / "RestoreFormer.pth").write_bytes(b"x")
    faces.refresh()
    assert faces.find("GFPGAN").path.name == "GFPGANv1.4.pth"  # v1.4 is preferred
    assert faces.api_list() == [{"name": "GFPGAN", "cmd_dir": str(folder)},
                                {"name": "RestoreFormer", "cmd_dir": str(folder)}]

    # CodeFormer, in A1111's models/Codeformer, is offered only with spandrel-extra-arches installed.
    codeformer = folder.parent / "Codeformer"
    codeformer.mkdir()
    (codeformer / "codeformer-v0.1.0.pth").write_bytes(b"x")
    faces.refresh()
    assert "CodeFormer" not in faces.names()
    with pytest.raises(UserError, match="spandrel-extra-arches") as err:
        faces.find("CodeFormer")
    assert CODEFORMER_NOTE in err.value.message
    monkeypatch.setattr(networks_module, "extra_arches_installed", lambda: True)
    assert faces.names() == ["GFPGAN", "RestoreFormer", "CodeFormer"]
    assert faces.api_list()[2] == {"name": "CodeFormer", "cmd_dir": str(codeformer)}


def test_face_restoration_settings_use_a1111_names_and_defaults() -> None:
    options = {opt.key: opt for section in core_sections() for opt in section.options}
    assert options["face_restoration_model"].default == "GFPGAN"
    assert set(options["face_restoration_model"].choices) == {"GFPGAN", "RestoreFormer", "CodeFormer"}
    assert options["code_former_weight"].default == 0.5
    assert options["face_restoration_unload"].default is False


# -- restoring with stand-ins ------------------------------------------------------------------------------------


def test_alignment_maps_the_template_onto_itself() -> None:
    image = np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    crop, affine = align_face(image, np.array(FFHQ_TEMPLATE))
    assert np.allclose(affine, [[1, 0, 0], [0, 1, 0]], atol=1e-3)
    assert np.abs(crop.astype(int) - image[:512, :512]).max() <= 1
    assert align_face(image, np.zeros((5, 2))) is None  # degenerate landmarks


def test_restore_changes_only_the_face_region(tmp_path: Path, memory: MemoryManager) -> None:
    loader = StandInLoader()
    faces, folder = restorers(tmp_path, memory, {"GFPGANv1.4.pth": b"stand-in"}, loader=loader)
    image = rgb_image()
    result = faces.restore(image)  # name None: the face_restoration_model setting, "GFPGAN"
    assert (result.faces, result.note) == (1, None)
    assert loader.loads == [(folder / "GFPGANv1.4.pth", "GFPGAN")]
    before, after = np.asarray(image).astype(int), np.asarray(result.image).astype(int)
    assert result.image.mode == "RGB" and result.image.size == image.size
    assert np.array_equal(outside(before), outside(after))
    # The crop's corners lie outside the parsing mask's ellipse: left as they were.
    assert np.array_equal(before[42:46, 62:66], after[42:46, 62:66])
    # Mid-cheek, inside the mask: the stand-in's negative.
    assert np.abs(after[120, 100] - (255 - before[120, 100])).max() <= 6
    assert faces.loaded_name() == "GFPGAN"


def test_two_faces_are_both_pasted(tmp_path: Path, memory: MemoryManager) -> None:
    near, far = template_landmarks(0.25, (0, 0)), template_landmarks(0.25, (128, 96))
    faces, _ = restorers(tmp_path, memory, {"GFPGANv1.4.pth": b"x"}, loader=StandInLoader(),
                         detector=FixedDetector([near, far]))
    image = rgb_image()
    result = faces.restore(image)
    assert result.faces == 2
    before, after = np.asarray(image).astype(int), np.asarray(result.image).astype(int)
    for x, y in ((64, 80), (192, 176)):
        assert np.abs(after[y, x] - (255 - before[y, x])).max() <= 8


def test_visibility_blends_with_the_original(tmp_path: Path, memory: MemoryManager) -> None:
    faces, _ = restorers(tmp_path, memory, {"GFPGANv1.4.pth": b"x"}, loader=StandInLoader())
    image = rgb_image()
    none = faces.restore(image, visibility=0.0)
    assert np.array_equal(np.asarray(none.image), np.asarray(image))
    assert (none.faces, none.note) == (0, ZERO_VISIBILITY_NOTE)
    full = np.asarray(faces.restore(image, visibility=1.0).image).astype(float)
    half = np.asarray(faces.restore(image, visibility=0.5).image).astype(float)
    assert np.abs(half - (full + np.asarray(image)) / 2).max() <= 1.0
    with pytest.raises(UserError, match="between 0 and 1"):
        faces.restore(image, visibility=1.5)


def test_no_face_leaves_the_image_unchanged(tmp_path: Path, memory: MemoryManager) -> None:
    faces, _ = restorers(tmp_path, memory, {"GFPGANv1.4.pth": b"x"}, loader=StandInLoader(),
                         detector=FixedDetector([]))
    image = rgb_image().convert("L")
    result = faces.restore(image)
    assert (result.faces, result.note) == (0, NO_FACE_NOTE)
    assert result.image is not image and result.image.mode == "L"
    assert np.array_equal(np.asarray(result.image), np.asarray(image))


def test_rgba_keeps_its_alpha(tmp_path: Path, memory: MemoryManager) -> None:
    faces, _ = restorers(tmp_path, memory, {"GFPGANv1.4.pth": b"x"}, loader=StandInLoader())
    rgb = rgb_image()
    alpha = Image.fromarray(np.tile(np.arange(rgb.width, dtype=np.uint8), (rgb.height, 1)))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    for visibility in (1.0, 0.5):
        result = faces.restore(rgba, visibility=visibility)
        assert result.image.mode == "RGBA" and result.faces == 1
        assert np.array_equal(np.asarray(result.image.getchannel("A")), np.asarray(alpha))
        assert not np.array_equal(np.asarray(result.image.convert("RGB")), np.asarray(rgb))


def test_codeformer_weight_comes_from_the_call_or_the_setting(tmp_path: Path, memory: MemoryManager) -> None:
    loader = StandInLoader()
    faces, _ = restorers(tmp_path, memory, {"GFPGANv1.4.pth": b"x"}, loader=loader,
                         settings={"code_former_weight": 0.7})
    faces.restore(rgb_image())
    faces.restore(rgb_image(), codeformer_weight=0.2)
    assert loader.weights == [0.7, 0.2]
    assert len(loader.loads) == 1  # the model stays loaded between restores
    with pytest.raises(UserError, match="CodeFormer weight"):
        faces.restore(rgb_image(), codeformer_weight=-0.1)


def test_cancel_unload_and_out_of_memory(tmp_path: Path, memory: MemoryManager) -> None:
    loader = StandInLoader()
    faces, _ = restorers(tmp_path, memory, {"GFPGANv1.4.pth": b"x"}, loader=loader,
                         settings={"face_restoration_unload": True})  # a no-op on the CPU
    with pytest.raises(FaceRestoreCancelled):
        faces.restore(rgb_image(), check=lambda: True)

    class Stop(Exception):
        pass

    def raising() -> None:
        raise Stop

    with pytest.raises(Stop):
        faces.restore(rgb_image(), check=raising)
    assert faces.loaded_name() == "GFPGAN"
    faces.unload()
    assert faces.loaded_name() is None
    memory.inject_oom(1)
    with pytest.raises(OutOfMemory):
        faces.restore(rgb_image())
    assert faces.loaded_name() is None  # freed with everything else
    assert faces.restore(rgb_image()).faces == 1
    assert len(loader.loads) == 3


# -- errors ------------------------------------------------------------------------------------------------------


def test_unknown_name_lists_the_available_ones(tmp_path: Path, memory: MemoryManager) -> None:
    faces, _ = restorers(tmp_path, memory, {"GFPGANv1.4.pth": b"x", "RestoreFormer.pth": b"x"},
                         loader=StandInLoader())
    with pytest.raises(NotFound, match="unknown face restorer 'Gfpgan-XL'; available: GFPGAN, RestoreFormer"):
        faces.restore(rgb_image(), "Gfpgan-XL")


def test_missing_weights_name_file_folder_and_catalogue_id(tmp_path: Path, memory: MemoryManager) -> None:
    faces, folder = restorers(tmp_path, memory, {}, loader=StandInLoader())
    with pytest.raises(UserError) as err:
        faces.restore(rgb_image())  # the setting's "GFPGAN"
    assert all(part in err.value.message for part in ("GFPGANv1.4.pth", str(folder), "'gfpgan-v1.4'"))
    with pytest.raises(UserError) as err:
        faces.restore(rgb_image(), "RestoreFormer")
    assert all(part in err.value.message for part in ("RestoreFormer.pth", str(folder), "'restoreformer'"))

    # Without an injected detector, the RetinaFace weights are needed.
    faces, folder = restorers(tmp_path / "d", memory, {"GFPGANv1.4.pth": b"x"}, loader=StandInLoader(),
                              detector=None)
    with pytest.raises(UserError) as err:
        faces.restore(rgb_image())
    message = err.value.message
    assert all(part in message for part in ("detection_Resnet50_Final.pth", str(folder),
                                            "'facexlib-detection-resnet50'", "releases/download"))


def test_missing_parser_falls_back_to_a_soft_square_with_a_note(tmp_path: Path, memory: MemoryManager) -> None:
    faces, folder = restorers(tmp_path, memory, {"GFPGANv1.4.pth": b"x"}, loader=StandInLoader(), parser=None)
    image = rgb_image()
    result = faces.restore(image)
    assert result.faces == 1 and result.note is not None
    assert all(part in result.note for part in ("parsing_parsenet.pth", str(folder), "'facexlib-parsing-parsenet'"))
    before, after = np.asarray(image).astype(int), np.asarray(result.image).astype(int)
    assert np.array_equal(outside(before), outside(after))
    assert np.abs(after[104, 124] - (255 - before[104, 124])).max() <= 6  # the centre is the restored face


def test_corrupt_and_wrong_files_are_clear_errors(tmp_path: Path, memory: MemoryManager) -> None:
    faces, _ = restorers(tmp_path, memory, {
        "RestoreFormer.pth": b"this is not a model" * 10,
        "GFPGANv1.4.pth": {"params_ema": old_esrgan()},
    })
    with pytest.raises(UserError, match=r"'RestoreFormer\.pth' .*corrupt"):
        faces.restore(rgb_image(), "RestoreFormer")
    with pytest.raises(UserError, match=r"'GFPGANv1\.4\.pth' .*not a face restoration model: .* as ESRGAN"):
        faces.restore(rgb_image(), "GFPGAN")
    faces, _ = restorers(tmp_path / "r", memory, {"GFPGANv1.3.pth": {"weight": torch.zeros(3)}})
    with pytest.raises(UserError, match=r"'GFPGANv1\.3\.pth' is not a face restoration model this app recognises"):
        faces.restore(rgb_image())
    # A corrupt detector file is named too.
    faces, _ = restorers(tmp_path / "d", memory, {"GFPGANv1.4.pth": b"x", "detection_Resnet50_Final.pth": b"junk"},
                         loader=StandInLoader(), detector=None)
    with pytest.raises(UserError, match=r"detection_Resnet50_Final\.pth' .*corrupt"):
        faces.restore(rgb_image())


# -- real architectures ------------------------------------------------------------------------------------------


def test_tiny_restoreformer_through_spandrel(tmp_path: Path, memory: MemoryManager) -> None:
    faces, _ = restorers(tmp_path, memory, {"RestoreFormer.pth": tiny_restoreformer()})
    image = rgb_image()
    result = faces.restore(image, "RestoreFormer")
    assert result.faces == 1 and faces.loaded_name() == "RestoreFormer"
    model = faces._model
    assert model is not None and model.architecture == "RestoreFormer" and model.dtype == torch.float32
    before, after = np.asarray(image), np.asarray(result.image)
    assert np.array_equal(outside(before), outside(after))
    assert not np.array_equal(before[80:140, 90:160], after[80:140, 90:160])


def test_facexlib_networks_load_from_our_folder(tmp_path: Path, memory: MemoryManager) -> None:
    faces, folder = restorers(tmp_path, memory, {
        "GFPGANv1.4.pth": b"x",
        "detection_Resnet50_Final.pth": random_retinaface(),
        "parsing_parsenet.pth": random_parsenet(),
    }, loader=StandInLoader(), detector=None, parser=None)
    detector = faces._detector_for()
    assert isinstance(detector, RetinaFaceDetector) and detector.path == folder / "detection_Resnet50_Final.pth"
    assert faces._detector_for() is detector  # built once
    detector.short_side, detector.confidence = 64, 0.0  # small and permissive: random weights, plumbing only
    array, _ = face_image(96, 64)
    found = detector.detect(array)
    assert found and all(f.landmarks5.shape == (5, 2) and len(f.box) == 4 and 0 <= f.score <= 1 for f in found)
    parser, note = faces._parser_for()
    assert isinstance(parser, ParseNetParser) and note is None
    labels = parser.labels(np.zeros((512, 512, 3), dtype=np.uint8))
    assert labels.shape == (512, 512) and 0 <= labels.min() and labels.max() < 19
    mask = parsing_mask(labels)
    assert mask.shape == (512, 512) and mask[:10].max() == 0.0 and 0.0 <= mask.min() <= mask.max() <= 1.0
    faces.unload()
    assert faces._detector is None and faces._parser is None


@pytest.mark.slow
def test_full_size_gfpgan_through_spandrel(tmp_path: Path, memory: MemoryManager) -> None:
    faces, folder = restorers(tmp_path, memory, {"GFPGANv1.4.pth": full_gfpgan()})
    image = rgb_image()
    first = faces.restore(image)
    assert first.faces == 1 and faces._model is not None and faces._model.architecture == "GFPGAN"
    before, after = np.asarray(image), np.asarray(first.image)
    assert np.array_equal(outside(before), outside(after))
    # GFPGAN's decoder noise runs under a fixed seed: the same input gives the same output.
    assert np.array_equal(after, np.asarray(faces.restore(image).image))
