"""Golden cases of the face renderer: e (windows + MappingNet), f (keypoint transform), g (KPDetector),
h (generator at 256). Weights come from the weight formula with the sidecar's `weight_seed`."""

from __future__ import annotations

from typing import Any

import torch

from ._pkg import submodule

weights = submodule("weights")
kpt = submodule("nets.keypoint_transform")
windows = submodule("render_windows")


def _synthetic(network: str, seed: int) -> torch.nn.Module:
    return weights.build_and_load(network, weights.synthetic_state_dict(network, seed), f"synthetic:{network}")


def test_f_keypoint_transformation(load_case: Any) -> None:
    case = load_case("f_keypoint_transformation")
    t = case.tensors
    head = {"yaw": t["yaw_logits"], "pitch": t["pitch_logits"], "roll": t["roll_logits"], "t": t["t"], "exp": t["exp"]}
    t_before = head["t"].clone()
    got = {
        "yaw_deg": kpt.headpose_logits_to_degrees(t["yaw_logits"]),
        "pitch_deg": kpt.headpose_logits_to_degrees(t["pitch_logits"]),
        "roll_deg": kpt.headpose_logits_to_degrees(t["roll_logits"]),
    }
    got["rot_mat"] = kpt.rotation_matrix(got["yaw_deg"], got["pitch_deg"], got["roll_deg"])
    got["kp_driving"] = kpt.keypoint_transformation(t["kp_canonical"], head)
    got["rot_mat_override"] = kpt.rotation_matrix(t["yaw_in"], t["pitch_in"], t["roll_in"])
    got["kp_driving_override"] = kpt.keypoint_transformation(
        t["kp_canonical"], head, yaw_in=t["yaw_in"], pitch_in=t["pitch_in"], roll_in=t["roll_in"]
    )
    print(case.check(got))
    assert torch.equal(head["t"], t_before)  # unlike upstream, the MappingNet output is not modified in place


def test_e_mapping_windows_and_mappingnet(load_case: Any) -> None:
    case = load_case("e_mapping")
    t, settings = case.tensors, case.sidecar["settings"]
    got: dict[str, torch.Tensor] = {}
    for prefix in ("crop", "full"):
        s = settings[f"{prefix}_settings"]
        assert weights.mapping_network_for_preprocess(s["preprocess"]) == s["mapping_network"]
        source = windows.source_semantics(t["first_coeff"], s["preprocess"], s["batch_size"])
        target = windows.target_semantics(
            t["coeff_seq"], t["first_coeff"], s["preprocess"], s["batch_size"], s["expression_scale"], s["still"]
        )
        got[f"{prefix}_source_semantics"], got[f"{prefix}_target_semantics"] = source, target
        mapping = _synthetic(s["mapping_network"], case.weight_seed)
        with torch.no_grad():
            src = mapping(source)
            steps = [mapping(target[:, i]) for i in range(target.shape[1])]
        for name in ("yaw", "pitch", "roll", "t", "exp"):
            got[f"{prefix}_src_{name}"] = src[name]
            got[f"{prefix}_tgt_{name}"] = torch.stack([step[name] for step in steps], dim=1)
    print(case.check(got))


def test_g_kp_extractor(load_case: Any) -> None:
    case = load_case("g_kp_extractor")
    detector = _synthetic("kp_extractor", case.weight_seed)
    image = case.tensors["image"]
    with torch.no_grad():
        got = {
            "down_weight": detector.down.weight,
            "downsampled": detector.downsample(image),
            "kp_canonical": detector(image),
        }
    print(case.check(got))


def test_h_generator256(load_case: Any, synthetic_net: Any) -> None:
    case = load_case("h_generator256")
    generator = synthetic_net("generator", case.weight_seed)  # shared with case k
    t = case.tensors
    with torch.no_grad():
        out = generator(t["source_image"], kp_driving=t["kp_driving"], kp_source=t["kp_source"])
    print(case.check(out))
