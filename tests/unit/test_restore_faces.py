"""A1111's "Restore faces" in txt2img and img2img: the face restorer runs on each image (stand-in networks: the
detector finds a fixed face, the 'restoration' negates it), the infotext says `Face restoration: GFPGAN`, and a
missing model fails the job before any sampling with a message saying where the file goes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.engine.infotext import parse_infotext
from modules.engine.postprocess.faces import FaceRestorers
from modules.jobs import JobState
from modules.services import build_services
from tests.fixtures.tiny_faces import EllipseParser, FixedDetector, StandInLoader, template_landmarks
from tests.fixtures.tiny_models import save_tiny_checkpoint

BASE = {"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 5, "do_not_save_samples": True}


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("faces")
    save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="alpha", seed=0)
    services = build_services(["--data-dir", str(data)], {})
    services.jobs.start()
    yield services
    services.jobs.stop()


def run(services, kind: str = "txt2img", **fields):
    job = services.jobs.submit(kind, {**BASE, **fields})
    assert job.wait(120), "job did not finish"
    return job


def test_missing_model_fails_before_sampling(studio) -> None:
    job = run(studio, restore_faces=True)
    assert job.state is JobState.FAILED and "GFPGANv1.4.pth" in job.error and "models/GFPGAN" in job.error
    assert job.progress.step == 0 and job.progress.text != "loading model"  # failed before the model loaded


def test_faces_are_restored_and_recorded(studio, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gfpgan = studio.paths.model_folder("GFPGAN")
    (gfpgan / "GFPGANv1.4.pth").write_bytes(b"the stand-in loader never reads this")
    studio.models.refresh("GFPGAN")
    detector = FixedDetector([template_landmarks(0.1, (6.0, 4.0))])
    restorers = FaceRestorers(studio.models, studio.engine.memory, studio.settings.get, detector,
                              parser=EllipseParser(), load_model=StandInLoader())
    monkeypatch.setattr(studio.engine, "face_restorers", restorers)

    plain = run(studio).result.images[0]
    restored = run(studio, restore_faces=True).result.images[0]
    assert parse_infotext(restored.infotext)["Face restoration"] == "GFPGAN"
    diff = np.abs(np.asarray(restored.image, int) - np.asarray(plain.image, int))
    assert diff.max() > 50 and diff[60:, :].max() == 0  # the face changed, the bottom rows did not

    init = Image.fromarray(np.full((64, 64, 3), 120, np.uint8))
    img2img = run(studio, "img2img", init_images=[init], restore_faces=True, denoising_strength=0.5)
    assert img2img.state is JobState.DONE, img2img.error
    assert "Face restoration: GFPGAN" in img2img.result.images[0].infotext and detector.calls >= 2
