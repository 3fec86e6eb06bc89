"""ControlNet: models from models/ControlNet (both single-file layouts and diffusers folders, offline), the
preprocessors, the control modes, and txt2img with units through the job queue, on tiny random-weight models.

What a user notices: a unit changes the image (reproducibly), weight 0 changes nothing, two units combine, the
guidance range and control modes matter, the infotext names the unit and reads back, and every mistake (wrong
family, unknown model or module, missing annotator weights, no image) gets a message saying what to do.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modules.engine.controlnet import annotators as aux
from modules.engine.controlnet import infotext as cn_infotext
from modules.engine.controlnet.models import controlnet_titles, find_controlnet, list_controlnets, load_controlnet
from modules.engine.controlnet.modes import soft_scales
from modules.engine.controlnet.preprocessors import (
    find_preprocessor,
    preprocessor_details,
    preprocessor_names,
    run_preprocessor,
)
from modules.engine.controlnet.resize import fit_to_size, pixel_perfect_resolution
from modules.engine.controlnet.topology import topology_from_shapes
from modules.engine.controlnet.units import ControlNetUnit
from modules.engine.infotext import parse_infotext
from modules.errors import UserError
from modules.jobs import JobState
from modules.services import build_services
from tests.fixtures.tiny_controlnet import controlnet_to_ldm, save_tiny_controlnet, tiny_controlnet
from tests.fixtures.tiny_models import save_tiny_checkpoint

BASE = {"steps": 2, "width": 64, "height": 64, "cfg_scale": 5, "sampler_name": "Euler", "seed": 11,
        "prompt": "a house", "checkpoint": "alpha", "do_not_save_samples": True, "do_not_save_grid": True}
HAS_AUX = importlib.util.find_spec("controlnet_aux") is not None


def half_black(width: int = 64, height: int = 64) -> Image.Image:
    """Black on the left, white on the right: one vertical edge in the middle."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, width // 2:] = 255
    return Image.fromarray(pixels)


def pattern() -> Image.Image:
    """A white square on black, off centre: a map whose position a ControlNet can follow."""
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[8:40, 16:48] = 255
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("cn")
    checkpoints = data / "models" / "Stable-diffusion"
    save_tiny_checkpoint(checkpoints, "sd1", name="alpha", seed=0)
    save_tiny_checkpoint(checkpoints, "sdxl", name="xl", seed=0)
    controlnets = data / "models" / "ControlNet"
    save_tiny_controlnet(controlnets, "sd1", "diffusers", name="cn-folder", seed=1)
    save_tiny_controlnet(controlnets, "sd1", "ldm", name="cn-ldm", seed=2)
    save_tiny_controlnet(controlnets, "sdxl", "single_file", name="cn-xl", seed=3, sidecar=True)
    (controlnets / "annotators").mkdir()
    (controlnets / "annotators" / "body_pose_model.pth").write_bytes(b"not a ControlNet")
    services = build_services(["--data-dir", str(data)], {})
    services.jobs.start()
    yield services
    services.jobs.stop()


def run(services, **fields):
    job = services.jobs.submit("txt2img", {**BASE, **fields})
    assert job.wait(120), "job did not finish"
    return job


def ok(services, **fields):
    job = run(services, **fields)
    assert job.state is JobState.DONE, job.error
    return job.result


def unit(**fields) -> dict:
    return {"module": "none", "model": "cn-ldm", "image": pattern(), **fields}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def first_image(services, **fields) -> np.ndarray:
    return pixels(ok(services, **fields).images[0].image)


# -- models -------------------------------------------------------------------------------------------------------


def test_lists_controlnets_but_not_the_annotators_folder(studio) -> None:
    names = [m.name for m in list_controlnets(studio.models)]
    assert names == ["cn-folder", "cn-ldm", "cn-xl"]
    titles = controlnet_titles(studio.models)
    assert titles[1].startswith("cn-ldm [") and titles[1].endswith("]")
    assert find_controlnet(studio.models, titles[1]).name == "cn-ldm"  # sd-webui-controlnet's "name [hash]"
    with pytest.raises(UserError, match="unknown ControlNet model 'annotators/body_pose_model'"):
        find_controlnet(studio.models, "annotators/body_pose_model")


@pytest.mark.parametrize("family, layout, suffix, sidecar", [
    ("sd1", "diffusers", "", False),
    ("sd1", "ldm", ".safetensors", False),  # lllyasviel's layout: the config is derived from the shapes
    ("sd1", "ldm", ".pth", False),
    ("sd1", "single_file", ".safetensors", False),
    ("sdxl", "single_file", ".safetensors", True),  # as SDXL ControlNets ship (diffusers keys, one file)
    ("sdxl", "ldm", ".safetensors", True),
])
def test_loads_every_layout_offline(tmp_path: Path, family: str, layout: str, suffix: str, sidecar: bool) -> None:
    from modules.model_registry import ModelFile

    path = save_tiny_controlnet(tmp_path, family, layout, seed=5, sidecar=sidecar, suffix=suffix or ".safetensors")
    entry = ModelFile("ControlNet", path.stem, path, 0, 0.0, is_dir=path.is_dir())
    net, detected, _ = load_controlnet(entry, tmp_path / "cache")
    assert detected == family
    reference = tiny_controlnet(family, seed=5).state_dict()
    loaded = net.state_dict()
    assert set(loaded) == set(reference)
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


@pytest.mark.parametrize("family, config", [
    ("sd1", {}),  # control_v11p_sd15_* (diffusers' defaults are SD 1.5's)
    ("sd2", {"cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True}),
    ("sdxl", {"block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
              "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
              "transformer_layers_per_block": [1, 2, 10], "attention_head_dim": [5, 10, 20],
              "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
              "projection_class_embeddings_input_dim": 2816}),
])
def test_full_size_configs_are_derived_from_shapes(family: str, config: dict) -> None:
    from diffusers import ControlNetModel

    with torch.device("meta"):  # real sizes without the memory: only the shapes are read
        net = ControlNetModel(**config)
    expected = dict(net.config)
    for layout, state in (("diffusers", net.state_dict()), ("ldm", controlnet_to_ldm(net))):
        topology = topology_from_shapes({k: tuple(v.shape) for k, v in state.items()}, "x")
        assert (topology.family, topology.layout, topology.unsure) == (family, layout, None)
        for key, value in topology.config.items():
            if key in expected and key != "transformer_layers_per_block":
                got = list(expected[key]) if isinstance(expected[key], tuple) else expected[key]
                assert value == got or (key == "attention_head_dim" and family == "sd1"), key
        if family == "sdxl":
            assert topology.config["transformer_layers_per_block"] == [1, 2, 10]


def test_not_a_controlnet_says_what_it_is(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from modules.model_registry import ModelFile

    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.lora_down.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(UserError, match="not a ControlNet model: it looks like a LoRA"):
        load_controlnet(ModelFile("ControlNet", "lora", path, 0, 0.0), tmp_path)


# -- preprocessors ------------------------------------------------------------------------------------------------


def test_module_names_and_details() -> None:
    labels = preprocessor_names()
    assert labels[0] == "none"
    for label in ("canny", "invert (from white bg & black line)", "threshold", "scribble_xdog", "depth_midas",
                  "openpose", "lineart_realistic", "softedge_hed"):
        assert label in labels
    assert "depth" in preprocessor_names(alias_names=False)
    assert find_preprocessor("invert").label == find_preprocessor("invert (from white bg & black line)").label
    canny = preprocessor_details()["canny"]
    assert canny["model_free"] and [s["value"] for s in canny["sliders"]] == [512, 100, 200]
    assert not preprocessor_details()["depth_midas"]["model_free"]


def test_canny_finds_the_edge_of_a_half_black_image() -> None:
    edges = np.asarray(run_preprocessor("canny", half_black(), resolution=64))[:, :, 0]
    columns = np.nonzero(edges.max(axis=0))[0]
    assert edges.shape == (64, 64) and set(columns) <= {31, 32} and len(columns) >= 1
    assert (edges[:, :30] == 0).all() and (edges[:, 34:] == 0).all()


def test_invert_threshold_and_scribble_maps() -> None:
    inverted = np.asarray(run_preprocessor("invert (from white bg & black line)", half_black()))
    assert (inverted[:, :32] == 255).all() and (inverted[:, 32:] == 0).all()
    grey = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))[:, :, None].repeat(3, axis=2))
    binary = np.asarray(run_preprocessor("threshold", grey, resolution=64, threshold_a=127))
    assert set(np.unique(binary)) == {0, 255} and (binary[:, :31] == 0).all() and (binary[:, 33:] == 255).all()
    # A dark line on white: the scribble is a white stroke along it, nothing elsewhere.
    line = np.full((64, 64, 3), 255, dtype=np.uint8)
    line[:, 30:33] = 0
    scribble = np.asarray(run_preprocessor("scribble_xdog", Image.fromarray(line), resolution=64))[:, :, 0]
    assert scribble[:, 28:35].max() == 255 and scribble[:, :20].max() == 0 and scribble[:, 44:].max() == 0


def test_unknown_module_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown ControlNet preprocessor 'cany'; available: none, .*canny"):
        run_preprocessor("cany", half_black())


def test_missing_annotator_weights_name_the_file_and_the_folder(tmp_path: Path) -> None:
    annotators = aux.Annotators(tmp_path / "annotators")
    with pytest.raises(UserError) as e:
        run_preprocessor("depth_midas", half_black(), annotators=annotators)
    assert "dpt_hybrid-midas-501f0c75.pt" in e.value.message and str(tmp_path / "annotators") in e.value.message
    assert "huggingface.co/lllyasviel/Annotators" in e.value.message


@pytest.mark.skipif(HAS_AUX, reason="controlnet-aux is installed")
def test_missing_controlnet_aux_names_the_package(tmp_path: Path) -> None:
    folder = tmp_path / "annotators"
    folder.mkdir()
    (folder / "ControlNetHED.pth").write_bytes(b"")
    with pytest.raises(UserError, match="needs the controlnet-aux package.*pip install controlnet-aux"):
        run_preprocessor("softedge_hed", half_black(), annotators=aux.Annotators(folder))


@pytest.mark.skipif(not HAS_AUX, reason="needs controlnet-aux")
def test_annotator_runs_from_local_weights(tmp_path: Path) -> None:
    from controlnet_aux.hed import ControlNetHED_Apache2

    folder = tmp_path / "annotators"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(ControlNetHED_Apache2().state_dict(), folder / "ControlNetHED.pth")
    result = run_preprocessor("softedge_hed", pattern(), resolution=64, annotators=aux.Annotators(folder))
    assert result.mode == "RGB" and min(result.size) == 64


@pytest.mark.parametrize("mode, expected", [("Crop and Resize", 128), ("Just Resize", 128),
                                            ("Resize and Fill", 64)])
def test_pixel_perfect_resolution(mode: str, expected: int) -> None:
    # A 200x100 image for a 128x128 generation: cropping scales the short side to 128, filling the long one.
    assert pixel_perfect_resolution(200, 100, 128, 128, mode) == expected


def test_resize_modes_fit_the_map_to_the_size() -> None:
    wide = np.zeros((32, 64, 3), dtype=np.uint8)
    wide[:, :, 1] = 200  # green everywhere: the fill colour comes from the border
    wide[:, 28:36] = 255
    for mode in ("Just Resize", "Crop and Resize", "Resize and Fill"):
        assert fit_to_size(wide, 48, 48, mode).shape == (48, 48, 3)
    filled = fit_to_size(wide, 64, 64, "Resize and Fill")
    assert (filled[0] == [0, 200, 0]).all() and (filled[:16, 0] == [0, 200, 0]).all()
    cropped = fit_to_size(wide, 32, 32, "Crop and Resize")
    assert (cropped[:, 12:20] == 255).all()  # the middle of the map survives the crop


def test_soft_injection_scales() -> None:
    assert soft_scales(13)[0] == pytest.approx(0.825 ** 12) and soft_scales(13)[-1] == 1.0
    assert soft_scales(10)[-1] == pytest.approx(0.825 ** 3)  # SDXL takes the first ten, as the extension does


def test_unit_infotext_round_trips() -> None:
    text = cn_infotext.format_unit({"module": "canny", "model": "cn [e3b0c442]", "weight": 1.0,
                                    "resize_mode": "Crop and Resize", "processor_res": 512, "threshold_a": "100",
                                    "pixel_perfect": False, "control_mode": "Balanced"})
    assert text.startswith("Module: canny, Model: cn [e3b0c442], Weight: 1.0, Resize Mode: Crop and Resize")
    fields = cn_infotext.parse_unit(text)
    assert fields["threshold_a"] == 100 and fields["pixel_perfect"] is False
    assert ControlNetUnit.model_validate(fields).resize_mode == "Crop and Resize"


# -- txt2img ------------------------------------------------------------------------------------------------------


def test_a_unit_changes_the_image_reproducibly_and_is_recorded(studio) -> None:
    plain = first_image(studio)
    result = ok(studio, controlnet=[unit(module="canny", image=half_black(), threshold_a=50)])
    again = first_image(studio, controlnet=[unit(module="canny", image=half_black(), threshold_a=50)])
    controlled = pixels(result.images[0].image)
    assert np.abs(controlled - plain).max() > 8
    assert (controlled == again).all()
    # The detected map comes back after the image, as sd-webui-controlnet returns it.
    assert len(result.images) == 2 and result.images[1].seed == -1
    edge = np.asarray(result.images[1].image)[:, :, 0]
    assert set(np.nonzero(edge.max(axis=0))[0]) <= {31, 32}
    params = parse_infotext(result.images[0].infotext)
    fields = cn_infotext.parse_unit(params["ControlNet 0"])
    assert fields["module"] == "canny" and fields["model"].startswith("cn-ldm [")
    assert (fields["threshold_a"], fields["threshold_b"], fields["processor_res"]) == (50, 200, 512)
    assert fields["control_mode"] == "Balanced" and fields["pixel_perfect"] is False
    assert cn_infotext.units_from_params(params)[0]["model"] == fields["model"]
    assert 'ControlNet 0: "Module: canny, Model: cn-ldm [' in result.images[0].infotext


def test_weight_zero_is_no_controlnet(studio) -> None:
    plain = first_image(studio)
    zero = first_image(studio, controlnet=[unit(weight=0.0)])
    assert np.abs(zero - plain).max() <= 1


def test_two_units_combine(studio) -> None:
    one = first_image(studio, controlnet=[unit()])
    two = ok(studio, controlnet=[unit(), unit(model="cn-folder", module="invert")])
    assert np.abs(pixels(two.images[0].image) - one).max() > 8
    assert len(two.images) == 3 and "ControlNet 1" in parse_infotext(two.images[0].infotext)
    disabled = first_image(studio, controlnet=[unit(), unit(model="cn-folder", enabled=False)])
    assert (disabled == one).all()


def test_guidance_range_matters(studio) -> None:
    # The first of the two steps shapes the tiny model's image; the last one only nudges it.
    full = first_image(studio, controlnet=[unit()])
    plain = first_image(studio)
    first_half = first_image(studio, controlnet=[unit(guidance_end=0.5)])
    second_half = first_image(studio, controlnet=[unit(guidance_start=0.5)])
    assert np.abs(first_half - plain).max() > 8 and (first_half != full).any()
    assert np.abs(second_half - full).max() > 8 and np.abs(second_half - plain).max() <= 4
    # Per-unit modes skip a unit outside its range (here, at the first step) instead of running it at scale 0.
    late_soft = first_image(studio, controlnet=[unit(guidance_start=0.5, control_mode="My prompt is more important")])
    assert np.abs(late_soft - plain).max() <= 4 and (late_soft != plain).any()
    never = first_image(studio, controlnet=[unit(guidance_start=1.0)])  # start == end: accepted, never runs
    assert (never == plain).all()


def test_control_modes(studio) -> None:
    balanced = first_image(studio, controlnet=[unit()])
    for mode in ("My prompt is more important", "ControlNet is more important"):
        result = ok(studio, controlnet=[unit(control_mode=mode)])
        assert np.abs(pixels(result.images[0].image) - balanced).max() > 4, mode
        assert f"Control Mode: {mode}" in result.images[0].infotext
    mixed = ok(studio, batch_size=2, controlnet=[unit(control_mode="ControlNet is more important"),
                                                 unit(model="cn-folder", module="invert")])
    assert len(mixed.images) == 4


def test_pixel_perfect_is_recorded(studio) -> None:
    wide = half_black(128, 64)
    result = ok(studio, controlnet=[unit(module="canny", image=wide, pixel_perfect=True, resize_mode=2)])
    fields = cn_infotext.parse_unit(parse_infotext(result.images[0].infotext)["ControlNet 0"])
    # 128x64 fitted inside 64x64 is 64x32: its short side is 32 pixels.
    assert fields["pixel_perfect"] is True and fields["processor_res"] == 32
    assert fields["resize_mode"] == "Resize and Fill"


def test_hires_fix_options(studio) -> None:
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "denoising_strength": 0.9,
             "hr_second_pass_steps": 4}
    both = ok(studio, **hires, controlnet=[unit(hr_option="Both")])
    low = ok(studio, **hires, controlnet=[unit(hr_option="Low res only")])
    assert both.images[0].image.size == (96, 96) and both.images[1].image.size == (64, 64)
    assert np.abs(pixels(both.images[0].image) - pixels(low.images[0].image)).max() > 4
    high = ok(studio, **hires, controlnet=[unit(hr_option="High res only")])
    assert np.abs(pixels(high.images[0].image) - pixels(both.images[0].image)).max() > 4


@pytest.mark.parametrize("fields, message", [
    ({"controlnet": [unit(model="cn-xl")]},
     "ControlNet 'cn-xl' is made for SDXL, but the checkpoint 'alpha' is SD 1.x"),
    ({"controlnet": [unit(model="nope")]}, "unknown ControlNet model 'nope'; available: cn-folder, cn-ldm, cn-xl"),
    ({"controlnet": [unit(module="depth_magic")]}, "unknown ControlNet preprocessor 'depth_magic'"),
    ({"controlnet": [unit(module="depth_midas")]}, "needs dpt_hybrid-midas-501f0c75.pt in "),
    ({"controlnet": [unit(image=None)]}, "ControlNet unit 0 has no control image"),
    ({"controlnet": [unit(), unit(image=None)]}, "ControlNet unit 1 has no control image"),
])
def test_bad_units_fail_the_job_with_a_message(studio, fields: dict, message: str) -> None:
    job = run(studio, **fields)
    assert job.state is JobState.FAILED and message in job.error, job.error
    assert job.error_status in (400, 404)


def test_init_image_plan_for_img2img(studio) -> None:
    """The contract img2img builds on: a unit without an image takes the init image and img2img's resize mode."""
    from modules.engine.controlnet.plan import controlled_pipeline, prepare_control

    model = studio.engine.checkpoints.get("alpha")
    units = [ControlNetUnit(model="cn-ldm", module="invert"), ControlNetUnit(model="cn-folder", enabled=False)]
    plan = prepare_control(studio.engine, model, units, 64, 64, init_image=half_black(128, 64), init_resize_mode=2)
    assert plan is not None and [u.index for u in plan.units] == [0]
    assert plan.units[0].resize_mode == "Resize and Fill" and plan.detected_maps[0].size == (64, 64)
    pipe, kwargs = controlled_pipeline(model.pipe, "img2img", plan, batch=1)
    assert type(pipe).__name__ == "StableDiffusionControlNetImg2ImgPipeline"
    assert kwargs["control_image"] is plan.units[0].image and kwargs["controlnet_conditioning_scale"] == 1.0
    assert prepare_control(studio.engine, model, units[1:], 64, 64) is None


def test_sdxl_checkpoint_with_an_sdxl_controlnet(studio) -> None:
    plain = first_image(studio, checkpoint="xl")
    controlled = first_image(studio, checkpoint="xl", controlnet=[unit(model="cn-xl")])
    assert np.abs(controlled - plain).max() > 4
    moded = first_image(studio, checkpoint="xl", controlnet=[unit(model="cn-xl",
                                                                  control_mode="ControlNet is more important")])
    assert np.abs(moded - controlled).max() > 4
    job = run(studio, checkpoint="xl", controlnet=[unit(model="cn-ldm")])
    assert job.state is JobState.FAILED and "is made for SD 1.x, but the checkpoint 'xl' is SDXL" in job.error


def _img2img(services, **fields):
    job = services.jobs.submit("img2img", {**BASE, "init_images": [pattern()], "denoising_strength": 0.9, **fields})
    assert job.wait(120), "job did not finish"
    assert job.state is JobState.DONE, job.error
    return job.result


def test_img2img_and_inpaint_take_units_and_record_them(studio) -> None:
    plain = pixels(_img2img(studio).images[0].image)
    result = _img2img(studio, controlnet=[unit(module="invert", image=None)])  # no image: the init image is used
    controlled = pixels(result.images[0].image)
    assert np.abs(controlled - plain).max() > 4
    assert "ControlNet 0" in parse_infotext(result.images[0].infotext)
    assert [g.seed for g in result.images] == [11, -1]  # the detected map follows, as sd-webui-controlnet does
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    inpainted = _img2img(studio, mask=mask, mask_blur=0, inpaint_full_res=False, controlnet=[unit()])
    out = pixels(inpainted.images[0].image)
    outside = np.ones((64, 64), bool)
    outside[8:40, 8:40] = False
    assert np.array_equal(out[outside], pixels(pattern())[outside])
