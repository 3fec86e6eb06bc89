"""Paste-back (`full` / `extfull`): rendered face frames blended into the whole photo.

Speed, measured (not asserted) on a 2-core CPU, OpenCV 5.0, a 1024x1024 photo, per frame, three runs:
    face 256x256: cv2.seamlessClone (upstream) 26-32 ms,  PasteBack 0.34-0.45 ms  (70-75x faster)
    face 512x512: cv2.seamlessClone (upstream) 102-172 ms, PasteBack 1.3-2.0 ms    (67-84x faster)
Including the resize of a 256 render to the box on both sides: 25-29 ms vs 0.36-0.59 ms (256 box) and
100-172 ms vs 1.8-2.3 ms (512 box). Building a PasteBack (mask + photo copy): 0.1-0.2 ms.

What a user would notice: the photo around the face is untouched, the face is the rendered one (no colour shift),
and there is no visible seam at the box edge even when the rendered crop is a little off in colour.
"""

from __future__ import annotations

import numpy as np
import pytest

from ._pkg import submodule

paste_back = submodule("paste_back")


def _photo(height: int = 96, width: int = 128) -> np.ndarray:
    """A smooth photo (gentle gradients, values 40..200) so neighbour differences come from the paste alone."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    photo = np.stack([40 + 80 * xx / width, 40 + 80 * yy / height, 120 + 40 * np.sin(xx / 9 + yy / 13)], axis=-1)
    return np.rint(photo).astype(np.uint8)


def _neighbour_jump(image: np.ndarray) -> int:
    """Largest difference between horizontally or vertically adjacent pixels (any channel)."""
    signed = image.astype(np.int16)
    return int(max(np.abs(np.diff(signed, axis=0)).max(), np.abs(np.diff(signed, axis=1)).max()))


def test_outside_untouched_centre_is_the_face_no_seam() -> None:
    photo = _photo()
    box = (30, 20, 94, 84)  # 64x64
    offset = 30  # the render came out 30 levels brighter than the photo
    face = photo[20:84, 30:94] + np.uint8(offset)
    feather = 8

    out = paste_back.paste_frame(photo, face, box, feather=feather)

    outside = np.ones(photo.shape[:2], dtype=bool)
    outside[20:84, 30:94] = False
    assert np.array_equal(out[outside], photo[outside])
    assert np.array_equal(
        out[20 + feather : 84 - feather, 30 + feather : 94 - feather], face[feather:-feather, feather:-feather]
    )
    # No seam: the 30-level step is spread over the band (smoothstep slope <= 1.5 / feather per pixel).
    allowed = _neighbour_jump(photo) + int(np.ceil(1.5 * offset / feather)) + 1
    assert _neighbour_jump(out) <= allowed < offset
    hard = paste_back.paste_frame(photo, face, box, feather=0)  # what a plain paste would look like
    assert _neighbour_jump(hard) >= offset - 2
    assert np.array_equal(hard[20:84, 30:94], face)


def test_default_feather_and_resizing() -> None:
    import cv2

    photo = _photo()
    box = (10, 10, 90, 70)  # 80x60: the render is square, so it is resized to the box
    render = np.full((32, 32, 3), 90, dtype=np.uint8)
    render[:, 16:] = 170
    paster = paste_back.PasteBack(photo, box)
    assert paster.feather == paste_back.default_feather(80, 60) == 6
    out = paster(render)
    resized = cv2.resize(render, (80, 60), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out[16:64, 16:84], resized[6:54, 6:74])


def test_box_partly_outside_the_photo() -> None:
    photo = _photo(48, 64)
    box = (-10, -6, 30, 26)  # 40x32, sticks out left and top
    face = np.full((32, 40, 3), 250, dtype=np.uint8)
    out = paste_back.paste_frame(photo, face, box, feather=4)
    assert out.shape == photo.shape
    assert np.array_equal(out[26:], photo[26:]) and np.array_equal(out[:, 30:], photo[:, 30:])
    # Edges on the photo border are not faded: the face reaches the border; the inner edges fade out.
    assert np.array_equal(out[0, 0], face[6, 10]) and np.array_equal(out[0:20, 0:24], np.full((20, 24, 3), 250))
    assert np.all(np.abs(out[25, 10].astype(int) - photo[25, 10]) < 10)
    assert np.all(np.abs(out[10, 29].astype(int) - photo[10, 29]) < 10)

    far = (50, 40, 80, 70)  # bottom-right corner
    out = paste_back.paste_frame(photo, np.full((30, 30, 3), 250, dtype=np.uint8), far, feather=4)
    assert np.array_equal(out[47, 63], [250, 250, 250]) and np.array_equal(out[:40], photo[:40])


def test_pasteback_reused_per_frame() -> None:
    photo = _photo()
    before = photo.copy()
    box = (20, 16, 84, 80)
    paster = paste_back.PasteBack(photo, box, feather=6)
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    frames = [paster(face) for face in faces]
    for face, frame in zip(faces, frames):
        assert np.array_equal(frame, paste_back.paste_frame(photo, face, box, feather=6))
    frames[0][:] = 0  # frames are independent copies; the photo is not touched
    assert np.array_equal(paster(faces[1]), frames[1])
    assert np.array_equal(photo, before)


def test_bad_input_is_refused() -> None:
    photo = _photo()
    face = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="outside"):
        paste_back.PasteBack(photo, (200, 200, 240, 240))
    with pytest.raises(ValueError, match="empty paste box"):
        paste_back.PasteBack(photo, (10, 10, 10, 30))
    with pytest.raises(ValueError, match="RGB uint8"):
        paste_back.paste_frame(photo, face.astype(np.float32), (0, 0, 16, 16))
    with pytest.raises(ValueError, match="feather"):
        paste_back.PasteBack(photo, (0, 0, 16, 16), feather=-1)
