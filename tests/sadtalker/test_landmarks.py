"""Face detector + 68-point landmarker: loading the upstream file layouts, detection, the FAN step, its quirks.

No real weights are needed: facexlib's own RetinaFace and FAN classes get random weights, saved in the layouts
of the released files and read back through the same loader real files use.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ._pkg import submodule

landmarks = submodule("landmarks")
FanLandmarker = landmarks.FanLandmarker
LandmarkModelError = landmarks.LandmarkModelError


def _retinaface() -> nn.Module:
    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return RetinaFace(network_name="resnet50", half=False, phase="test", device=torch.device("cpu"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The two files in their released layouts: RetinaFace saved from DataParallel (`module.` keys), FAN as a
    training checkpoint ({'state_dict': ..., 'epoch': ...})."""
    from facexlib.alignment.awing_arch import FAN

    torch.manual_seed(0)
    detector = _retinaface().state_dict()
    fan = FAN(num_modules=4, num_landmarks=98, device="cpu").state_dict()
    folder = tmp_path_factory.mktemp("GFPGAN")
    torch.save({f"module.{k}": v for k, v in detector.items()}, folder / landmarks.DETECTOR_FILE)
    torch.save({"state_dict": fan, "epoch": 7}, folder / landmarks.ALIGNMENT_FILE)
    return {"folder": folder, "detector": detector, "fan": fan}


@pytest.fixture(scope="module")
def landmarker(weights: dict[str, Any]) -> Any:
    folder = weights["folder"]
    return FanLandmarker(folder / landmarks.DETECTOR_FILE, folder / landmarks.ALIGNMENT_FILE)


def test_missing_landmark_files(tmp_path: Path) -> None:
    assert landmarks.missing_landmark_files(tmp_path) == [landmarks.DETECTOR_FILE, landmarks.ALIGNMENT_FILE]
    (tmp_path / landmarks.DETECTOR_FILE).write_bytes(b"x")
    assert landmarks.missing_landmark_files(tmp_path) == [landmarks.ALIGNMENT_FILE]


def test_loads_the_released_layouts_exactly(weights: dict[str, Any], landmarker: Any) -> None:
    for net, original in ((landmarker.detector_net, weights["detector"]), (landmarker.fan_net, weights["fan"])):
        state = net.state_dict()
        assert list(state) == list(original)
        assert all(torch.equal(state[k], original[k]) for k in original)
        assert not net.training and all(p.dtype == torch.float32 for p in net.parameters())


def test_plain_detector_state_dict_loads(weights: dict[str, Any], tmp_path: Path) -> None:
    torch.save(weights["detector"], tmp_path / landmarks.DETECTOR_FILE)
    loaded = FanLandmarker(tmp_path / landmarks.DETECTOR_FILE, weights["folder"] / landmarks.ALIGNMENT_FILE)
    key = "body.conv1.weight"
    assert torch.equal(loaded.detector_net.state_dict()[key], weights["detector"][key])


@pytest.mark.parametrize("which", ["detector", "alignment"])
@pytest.mark.parametrize("problem", ["missing", "corrupt", "renamed key"])
def test_bad_weight_files_name_the_file(weights: dict[str, Any], tmp_path: Path, which: str, problem: str) -> None:
    paths = {"detector": weights["folder"] / landmarks.DETECTOR_FILE,
             "alignment": weights["folder"] / landmarks.ALIGNMENT_FILE}
    name = landmarks.DETECTOR_FILE if which == "detector" else landmarks.ALIGNMENT_FILE
    bad = paths[which] = tmp_path / name
    key = "body.conv1.weight" if which == "detector" else "conv1.conv.weight"
    if problem == "corrupt":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif problem == "renamed key":
        state = dict(weights[which if which == "detector" else "fan"])
        state[key + "_renamed"] = state.pop(key)
        torch.save(state if which == "detector" else {"state_dict": state}, bad)
    with pytest.raises(LandmarkModelError) as caught:
        FanLandmarker(paths["detector"], paths["alignment"])
    message = str(caught.value)
    assert name in message
    assert isinstance(caught.value, ValueError)
    if problem == "missing":
        assert "not found" in message
    elif problem == "corrupt":
        assert "corrupt" in message
    else:
        assert repr(key) in message and repr(key + "_renamed") in message


def test_landmarks_in_box_real_fan(landmarker: Any) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)
    box = (20.7, 10.2, 120.9, 140.5)
    points = landmarker.landmarks_in_box(image, box)
    assert points.shape == (68, 2) and points.dtype == np.float32 and np.isfinite(points).all()
    # Heatmap cells 0..63 (+0.5 +-0.25) scaled by the crop size: inside the int() box up to 1/256 of its size.
    x0, y0, x1, y1 = 20, 10, 120, 140
    assert (points[:, 0] >= x0).all() and (points[:, 0] <= x1 + (x1 - x0) / 256).all()
    assert (points[:, 1] >= y0).all() and (points[:, 1] <= y1 + (y1 - y0) / 256).all()


def test_call_uses_the_largest_face(landmarker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    small = landmarks.DetectedFace((10.0, 10.0, 50.0, 50.0), 0.999)
    large = landmarks.DetectedFace((90.0, 20.0, 190.0, 150.0), 0.98)
    assert large.area == 100 * 130 > small.area
    # Score order (the best first, as upstream's detector returns them): the largest is not first.
    monkeypatch.setattr(landmarker, "faces", lambda image: [small, large])
    image = np.random.default_rng(2).integers(0, 256, (160, 200, 3), dtype=np.uint8)
    points = landmarker(image)
    assert points is not None and points.shape == (68, 2)
    assert (points[:, 0] >= 90).all() and (points[:, 0] <= 190.5).all()
    assert (points[:, 1] >= 20).all() and (points[:, 1] <= 150.6).all()


class _FakeFan(nn.Module):
    """Returns fixed heatmaps (the last of 99 channels is FAN's boundary map) and records its input."""

    def __init__(self, heatmaps: np.ndarray) -> None:
        super().__init__()
        boundary = np.zeros((1, 64, 64), dtype=np.float32)
        self.heatmaps = torch.from_numpy(np.concatenate([heatmaps, boundary]))[None]
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[None]]:
        self.seen.append(x.clone())
        return [torch.zeros_like(self.heatmaps), self.heatmaps], [None, None]


def _peaks(default: tuple[int, int] = (30, 30)) -> np.ndarray:
    heatmaps = np.zeros((98, 64, 64), dtype=np.float32)
    heatmaps[:, default[0], default[1]] = 1.0
    return heatmaps


def test_heatmap_to_pixels_follows_facexlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """argmax + 0.25 * sign(neighbour difference) + 0.5, times crop size / 64, plus the int() box corner."""
    heatmaps = _peaks()
    heatmaps[0] = 0.0
    heatmaps[0, 20, 10], heatmaps[0, 20, 9] = 1.0, 0.5  # left neighbour larger: x - 0.25
    heatmaps[0, 19, 10], heatmaps[0, 21, 10] = 0.3, 0.6  # lower neighbour larger: y + 0.25
    heatmaps[34], heatmaps[41] = 0.0, 0.0
    heatmaps[34, 40, 12], heatmaps[41, 44, 20] = 1.0, 1.0
    fan = _FakeFan(heatmaps)
    net = FanLandmarker.from_networks(nn.Identity(), fan)
    image = np.zeros((100, 160, 3), dtype=np.uint8)
    image[...] = (200, 100, 50)
    points = net.landmarks_in_box(image, (10.6, 20.3, 138.9, 84.2))  # crop 128 x 64 at (10, 20)
    assert points.dtype == np.float32
    np.testing.assert_allclose(points[0], [(10 - 0.25 + 0.5) * 2 + 10, (20 + 0.25 + 0.5) + 20])
    np.testing.assert_allclose(points[1], [30.5 * 2 + 10, 30.5 + 20])  # 68-point 1 is 98-point 2
    # 68-point 18 is the mean of 98-points 34 and 41.
    np.testing.assert_allclose(points[18], [(12.5 + 20.5) * 2 / 2 + 10, (40.5 + 44.5) / 2 + 20])
    # The network saw the crop resized to 256 x 256 with its channels reversed (upstream's quirk), in 0..1.
    seen = fan.seen[-1]
    assert seen.shape == (1, 3, 256, 256)
    np.testing.assert_allclose(seen[0, :, 0, 0].numpy(), np.array([50, 100, 200]) / 255, rtol=1e-6)
    # A box reaching past the image is clipped: the crop and the offset start at 0.
    clipped = net.landmarks_in_box(image, (-5.5, -3.0, 59.9, 63.0))  # crop 59 x 63 at (0, 0)
    np.testing.assert_allclose(clipped[1], [30.5 * 59 / 64, 30.5 * 63 / 64], rtol=1e-6)
    with pytest.raises(ValueError, match="no pixels"):
        net.landmarks_in_box(image, (170.0, 0.0, 200.0, 50.0))


@pytest.mark.parametrize("edge_row", [63, 0, 1])
def test_heatmap_vertical_neighbour_quirk(edge_row: int) -> None:
    """One point peaking on the bottom (top) row replaces EVERY point's lower (upper) neighbour by the map's
    last (first) pixel, as facexlib's rule does (row 1 column 0 counts as top: its test is `<= 0`)."""
    heatmaps = _peaks()
    heatmaps[0, 29, 30], heatmaps[0, 31, 30] = 0.3, 0.6  # normally: lower larger, y + 0.25
    heatmaps[0, 63, 63], heatmaps[0, 0, 0] = 0.0, 0.9
    assert landmarks.heatmap_points(heatmaps)[0, 1] == pytest.approx(30.75)
    heatmaps[5] = 0.0
    heatmaps[5, edge_row, 0] = 1.0
    # Bottom: 0.0 (last pixel) - 0.3 < 0; top: 0.6 - 0.9 (first pixel) < 0.
    assert landmarks.heatmap_points(heatmaps)[0, 1] == pytest.approx(30.25)


def test_heatmap_points_equal_facexlib_calculate_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bit-equal to facexlib's own function (which needs the `np.float` alias NumPy 1.24 removed)."""
    from facexlib.alignment import awing_arch

    monkeypatch.setattr(np, "float", float, raising=False)
    rng = np.random.default_rng(3)
    smooth = np.zeros((98, 64, 64), dtype=np.float32)
    yy, xx = np.mgrid[:64, :64]
    for i, (cy, cx) in enumerate(rng.uniform(3, 60, (98, 2))):
        smooth[i] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    noise = rng.standard_normal((98, 64, 64)).astype(np.float32)
    noise.reshape(98, -1)[:, -1] = -10.0  # facexlib indexes past the end for a peak in the very last cell
    for heatmaps in (smooth, noise):
        want = awing_arch.calculate_points(heatmaps[None]).reshape(-1, 2)
        np.testing.assert_array_equal(landmarks.heatmap_points(heatmaps), want)


def test_detection_end_to_end_with_controlled_heads() -> None:
    """Class head forced to 'face' everywhere and box head to zero: every prior anchor is a face at score ~1,
    so the output is the anchors after NMS, largest first; forced to 'no face', nothing is found."""
    torch.manual_seed(0)
    detector = _retinaface()
    heatmaps = _peaks((32, 32))
    net = FanLandmarker.from_networks(detector, _FakeFan(heatmaps))
    for head in list(detector.ClassHead) + list(detector.BboxHead):
        nn.init.zeros_(head.conv1x1.weight)
        nn.init.zeros_(head.conv1x1.bias)
    for head in detector.ClassHead:
        head.conv1x1.bias.data.view(-1, 2)[:] = torch.tensor([-10.0, 10.0])
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    found = net.faces(image)
    areas = [face.area for face in found]
    assert areas == sorted(areas, reverse=True) and all(face.score > 0.97 for face in found)
    # The largest anchor: 512 px square on the stride-32 grid (centres 16 or 48).
    x0, y0, x1, y1 = found[0].box
    assert found[0].area == pytest.approx(512 * 512)
    assert (x0 + x1) / 2 in (pytest.approx(16), pytest.approx(48))
    points = net(image)
    assert points is not None
    # Every heatmap peaks at cell (32, 32): the centre (+0.5 cell) of the clipped largest box.
    cx, cy = (max(int(x0), 0) + min(int(x1), 64)) / 2, (max(int(y0), 0) + min(int(y1), 64)) / 2
    np.testing.assert_allclose(points[0], [cx + 0.5, cy + 0.5])
    for head in detector.ClassHead:
        head.conv1x1.bias.data.view(-1, 2)[:] = torch.tensor([10.0, -10.0])
    assert net.faces(image) == [] and net(image) is None


def test_detector_channel_order() -> None:
    """RetinaFace gets BGR minus (104, 117, 123); `rgb_into_detector` reproduces upstream's crop step (RGB as is)."""
    seen: list[torch.Tensor] = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cfg = {"min_sizes": [[16, 32], [64, 128], [256, 512]], "steps": [8, 16, 32],
                        "variance": [0.1, 0.2], "clip": False}

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
            seen.append(x.clone())
            anchors = 2 * sum(-(-x.shape[2] // s) * -(-x.shape[3] // s) for s in self.cfg["steps"])
            return torch.zeros(1, anchors, 4), torch.tensor([1.0, 0.0]).repeat(1, anchors, 1), None

    image = np.zeros((40, 48, 3), dtype=np.uint8)
    image[..., 0] = 255
    assert FanLandmarker.from_networks(Probe(), nn.Identity()).faces(image) == []
    assert FanLandmarker.from_networks(Probe(), nn.Identity(), rgb_into_detector=True).faces(image) == []
    assert seen[0].shape == (1, 3, 40, 48)
    assert seen[0][0, :, 0, 0].tolist() == [-104.0, -117.0, 255 - 123.0]
    assert seen[1][0, :, 0, 0].tolist() == [255 - 104.0, -117.0, -123.0]


@pytest.mark.parametrize("image", [
    np.zeros((32, 32, 3), dtype=np.float32),
    np.zeros((32, 32), dtype=np.uint8),
    np.zeros((32, 32, 4), dtype=np.uint8),
    np.zeros((0, 32, 3), dtype=np.uint8),
    [[0, 0, 0]],
])
def test_bad_images_are_rejected(image: Any) -> None:
    net = FanLandmarker.from_networks(nn.Identity(), nn.Identity())
    with pytest.raises(ValueError, match="image"):
        net(image)
    with pytest.raises(ValueError, match="image"):
        net.landmarks_in_box(image, (0, 0, 10, 10))


def test_to_moves_both_networks() -> None:
    net = FanLandmarker.from_networks(nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1))
    assert net.to("meta") is net and net.device == torch.device("meta")
    assert net.detector_net.weight.is_meta and net.fan_net.weight.is_meta


def test_importing_stays_cheap() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'tests'); from sadtalker._pkg import submodule; "
            "submodule('landmarks'); print(sorted({'torch', 'cv2', 'facexlib'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_boxes_that_overflow_or_miss_the_image_are_not_faces() -> None:
    """A wild box regression (random or badly fitting weights) gives inf boxes; they must not reach the crop."""
    torch.manual_seed(0)
    detector = _retinaface()
    net = FanLandmarker.from_networks(detector, _FakeFan(_peaks((32, 32))))
    for head in detector.ClassHead:
        nn.init.zeros_(head.conv1x1.weight)
        head.conv1x1.bias.data.view(-1, 2)[:] = torch.tensor([-10.0, 10.0])
    for head in detector.BboxHead:
        nn.init.zeros_(head.conv1x1.weight)
        head.conv1x1.bias.data.fill_(1e4)  # exp(1e4 * variance) overflows to inf
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    assert net.faces(image) == [] and net(image) is None
