"""Golden cases of the coefficient stage: a (3DMM regressor), c (ExpNet), d (PoseVAE + smoothing).
Weights come from the weight formula with the sidecar's `weight_seed`; injected noise/blinks from the case."""

from __future__ import annotations

from typing import Any

import torch

from ._pkg import submodule

weights = submodule("weights")
face_recon = submodule("nets.face_recon")
audio2pose = submodule("nets.audio2pose")


def _synthetic(network: str, seed: int) -> torch.nn.Module:
    return weights.build_and_load(network, weights.synthetic_state_dict(network, seed), f"synthetic:{network}")


def test_a_face_3drecon(load_case: Any) -> None:
    case = load_case("a_face_3drecon")
    net = _synthetic("face_3drecon", case.weight_seed)
    with torch.no_grad():
        coeffs = net(case.tensors["image"])
    print(case.check({"coeffs_257": coeffs, "coeffs_70": face_recon.coeffs_70(coeffs)}))


def test_c_audio2exp(load_case: Any) -> None:
    case = load_case("c_audio2exp")
    net = _synthetic("audio2exp", case.weight_seed)
    t = case.tensors
    with torch.no_grad():
        got = net.predict_clip(t["indiv_mels"], t["ref"], t["ratio_gt"])
    print(case.check({"exp_coeff_pred": got}))


def test_d_audio2pose(load_case: Any) -> None:
    case = load_case("d_audio2pose")
    net = _synthetic("audio2pose", case.weight_seed)
    t, settings = case.tensors, case.sidecar["settings"]
    for prefix in ("", "short_"):
        frames = int(t[f"{prefix}num_frames"].item())
        z = t[f"{prefix}z"]
        assert z.shape[0] == audio2pose.num_noise_draws(frames)
        assert audio2pose.savgol_window(frames) == settings[f"{prefix}savgol_window"]
        with torch.no_grad():
            out = net.predict(
                t[f"{prefix}indiv_mels"], t[f"{prefix}ref"], int(t[f"{prefix}pose_style"].item()), frames, z=z
            )
        assert torch.count_nonzero(out["pose_motion_pred"][:, 0]) == 0  # frame 0 is the reference
        got = {
            f"{prefix}pose_motion_pred": out["pose_motion_pred"],
            f"{prefix}pose_pred": out["pose_pred"],
            f"{prefix}pose_pred_smoothed": audio2pose.smooth_pose(out["pose_pred"]),
        }
        print(case.check(got, names=list(got)))
