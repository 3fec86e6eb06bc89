"""3DMM alignment (golden case i), the source-coefficient glue between cases i and a, and the crop modes'
geometry with a fixed landmark set standing in for the face detector."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ._pkg import submodule

align = submodule("align")
crop = submodule("crop")
source_coeffs = submodule("source_coeffs")


def _t(array: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def test_i_align_3dmm(load_case: Any) -> None:
    case = load_case("i_align_3dmm")
    image, lm68 = case.tensors["image"].numpy(), case.tensors["lm68"].numpy()
    lm3d = case.tensors["lm3d_std_5"].numpy()
    height, width = image.shape[:2]

    flipped = align.flip_landmarks_y(lm68, height)
    points = align.five_points(flipped)
    pos_t, pos_s = align.fit_scale_translation(points, lm3d)
    main = align.align_for_3dmm(image, lm68, lm3d)
    fallback_points = align.fallback_points(width, height, lm3d)
    fallback = align.align_for_3dmm(image, None, lm3d)
    got = {
        "lm68_yflip": _t(flipped),
        "lm5p": _t(points),
        "pos_t": _t(pos_t),
        "pos_s": torch.tensor([pos_s], dtype=torch.float64),
        "trans_params_f64": _t(main.trans_params),
        "trans_params": _t(main.trans_params.astype(np.float32)),
        "crop": _t(main.crop),
        "crop_tensor": main.net_input(),
        "lm_crop": _t(main.landmarks),
        "fallback_lm5": _t(fallback_points.astype(np.float64)),
        "fallback_trans_params_f64": _t(fallback.trans_params),
        "fallback_crop": _t(fallback.crop),
    }
    print(case.check(got))
    assert not main.used_fallback and fallback.used_fallback
    # upstream's "no face" marker (all -1) selects the same fallback as None
    marker = align.align_for_3dmm(image, -np.ones((68, 2), np.float32), lm3d)
    assert marker.used_fallback and np.array_equal(marker.crop, fallback.crop)


def test_standard_landmarks_are_upstream(load_case: Any, constants: dict[str, Any]) -> None:
    """Our built-in float32 standard landmarks are the golden input exactly (constants.json rounds them)."""
    case = load_case("i_align_3dmm")
    assert np.array_equal(align.LM3D_STD_5, case.tensors["lm3d_std_5"].numpy())
    assert np.allclose(align.LM3D_STD_5, np.array(constants["lm3d_std_5pt"]), atol=1e-7)
    # ... and they are the 5-point reduction of the 68 standard landmarks
    lm68_3d = np.array(constants["similarity_Lm3D_all_68x3"], dtype=np.float32)
    assert np.allclose(align.five_points(lm68_3d), align.LM3D_STD_5, atol=1e-7)
    face3d = constants["face3d_align"]
    assert list(align.LM68_TO_5_INDEX) == face3d["lm68_to_5_idx_1based"]
    assert (align.TARGET_SIZE, align.RESCALE_FACTOR) == (face3d["target_size"], face3d["rescale_factor"])


def test_source_coefficients_join_cases_i_and_a(load_case: Any, synthetic_net: Any) -> None:
    """Case a's first input row is case i's crop: our extraction of case i's image must give case a's row 0
    for the 70 network columns, and case i's (s, tx, ty) as float32 for columns 70:73."""
    align_case, recon_case = load_case("i_align_3dmm"), load_case("a_face_3drecon")
    net = synthetic_net("face_3drecon", recon_case.weight_seed)
    image, lm68 = align_case.tensors["image"].numpy(), align_case.tensors["lm68"].numpy()
    result = source_coeffs.extract_coefficients(net, [image], [lm68])
    atol = recon_case.sidecar["recommended_tolerance"]
    full_err = np.abs(result.full_3dmm[0] - recon_case.tensors["coeffs_257"][0].numpy()).max()
    row_err = np.abs(result.first_coeff[0, :70] - recon_case.tensors["coeffs_70"][0].numpy()).max()
    assert full_err <= atol["coeffs_257"]["atol"] and row_err <= atol["coeffs_70"]["atol"], (full_err, row_err)
    assert np.array_equal(result.first_coeff[0, 70:], align_case.tensors["trans_params"].numpy()[2:])
    assert result.coeff_3dmm.dtype == np.float32 and result.coeff_3dmm.shape == (1, 73)
    assert result.fallback_frames == ()


def test_video_landmarks_reuse_the_previous_face() -> None:
    face = np.arange(136, dtype=np.float32).reshape(68, 2)
    answers = iter([None, face, -np.ones((68, 2), np.float32), None])
    tracked = source_coeffs.track_landmarks([np.zeros((4, 4, 3), np.uint8)] * 4, lambda image: next(answers))
    assert tracked[0] is None and all(t is face for t in tracked[1:])


# ----------------------------------------------------------------------------------------------------------
# Crop modes. A hand-made face: eye centres (100, 100) and (140, 100), mouth corners (105, 150), (135, 150).
# Worked by hand from the upstream formulas: eye_to_eye (40, 0), eye_to_mouth (0, 50) -> x = (90, 0),
# y = (0, 90), centre (120, 105), quad corners x 30..210, y 15..195, qsize 180, border 18, crop box
# (12, 0, 228, 213) in a 256 x 256 image, quad box (18, 15, 198, 195) inside it.
# ----------------------------------------------------------------------------------------------------------


def _face(scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    lm = np.full((68, 2), 120.0, dtype=np.float32)
    lm[36:42], lm[42:48] = (100, 100), (140, 100)
    lm[48], lm[54] = (105, 150), (135, 150)
    return (lm * scale + np.array(shift, dtype=np.float32)).astype(np.float32)


def test_crop_geometry_worked_example() -> None:
    plan = crop.plan_crop(_face(), (256, 256), "crop")
    assert plan.resized_size == (256, 256)
    assert plan.crop_box == (12, 0, 228, 213) and plan.quad_box == (18, 15, 198, 195)
    assert plan.face_box == (30, 15, 210, 195) and plan.output_size == (180, 180)
    assert plan.paste_box is None
    ext = crop.plan_crop(_face(), (256, 256), "extcrop")
    assert ext.face_box == (12, 0, 228, 213) and ext.output_size == (216, 213)
    assert crop.plan_crop(_face(), (256, 256), "full").paste_box == (30, 15, 210, 195)
    assert crop.plan_crop(_face(), (256, 256), "extfull").paste_box == (12, 0, 228, 213)
    resize = crop.plan_crop(None, (300, 200), "resize")
    assert resize.face_box == (0, 0, 300, 200) and resize.paste_box is None


def test_crop_applies_to_every_frame_and_resizes_to_the_source_size() -> None:
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    prepared = crop.prepare_source(image, "crop", 128, landmarker=lambda frame: _face())
    assert prepared.image.shape == (128, 128, 3) and prepared.image.dtype == np.uint8
    assert np.array_equal(prepared.plan.apply(image), image[15:195, 30:210])
    resized = crop.prepare_source(image, "Resize", 64)  # no landmarker needed, mode case-insensitive
    assert resized.image.shape == (64, 64, 3) and resized.plan.mode == "resize"


def test_huge_face_is_cropped_on_a_shrunk_copy_and_pasted_back_in_full_pixels() -> None:
    plan = crop.plan_crop(_face(scale=12.0), (3072, 3072), "full")  # qsize 2160 -> shrink 2
    assert plan.resized_size == (1536, 1536)
    left, top, right, bottom = plan.face_box
    assert plan.paste_box == (2 * left, 2 * top, 2 * right, 2 * bottom)
    assert plan.apply(np.zeros((3072, 3072, 3), np.uint8)).shape == (bottom - top, right - left, 3)


def test_face_at_the_border_keeps_the_quad_inside_the_crop() -> None:
    plan = crop.plan_crop(_face(shift=(60.0, 70.0)), (256, 256), "crop")  # quad reaches x 270, y 265
    assert plan.crop_box[2] == 256 and plan.crop_box[3] == 256
    left, top, right, bottom = plan.face_box
    assert right <= 256 and bottom <= 256
    assert plan.apply(np.zeros((256, 256, 3), np.uint8)).shape == (bottom - top, right - left, 3)


def test_crop_errors() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(crop.FaceNotFoundError, match="no face was found"):
        crop.prepare_source(image, "crop", 64, landmarker=lambda frame: None)
    with pytest.raises(ValueError, match="unknown preprocess mode 'square'.*crop, extcrop, resize, full, extfull"):
        crop.prepare_source(image, "square", 64)
    with pytest.raises(ValueError, match="needs a face landmarker"):
        crop.prepare_source(image, "extfull", 64)
