"""Face restoration networks read with spandrel: GFPGAN (v1.3/v1.4, "clean" architecture), RestoreFormer, and
CodeFormer when the opt-in `spandrel-extra-arches` package is installed.

spandrel recognises the architecture from the state dict (A1111 does the same since 1.8) and builds it; basicsr
and gfpgan are not used (see deps.md §2). Each network is called directly rather than through spandrel's
`call_fn`, because the calls differ and GFPGAN's helper feeds every one of them the same way: a 512x512 RGB face
scaled to -1..1, giving a face in -1..1 back. GFPGAN is asked for its final image only (`return_rgb=False`),
CodeFormer gets its fidelity weight.

Precision follows spandrel's flags, as A1111 does: all three are marked unsafe in float16 (spandrel's authors saw
broken output), so on a GPU they run in float32, or bfloat16 when the app itself runs in bfloat16 (which they
support); on the CPU always float32.

GFPGAN adds random noise inside its StyleGAN decoder; restoring runs under a forked, fixed-seed RNG so that the
same image gives the same result and the caller's random state is left alone.

CodeFormer is loaded through a private copy of spandrel's registry with the extra architectures added, so
installing that package never changes what the upscalers accept.

Importing this module does not import torch or spandrel; the functions do.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.engine.postprocess.faces.detect import FACE_SIZE
from modules.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from modules.engine.postprocess.spandrel_models import FileIdentity

log = logging.getLogger(__name__)

GFPGAN_ARCH = "GFPGAN"
RESTOREFORMER_ARCH = "RestoreFormer"
CODEFORMER_ARCH = "CodeFormer"
FACE_ARCHITECTURES = (GFPGAN_ARCH, RESTOREFORMER_ARCH, CODEFORMER_ARCH)
EXTRA_ARCHES_MODULE = "spandrel_extra_arches"
# The seed of GFPGAN's decoder noise; any fixed value makes a restore repeatable.
NOISE_SEED = 0

# (module, face in -1..1, CodeFormer weight) -> face in -1..1
Runner = Callable[[Any, "torch.Tensor", float], "torch.Tensor"]


@dataclass
class FaceModel:
    """A face restoration network on its device, ready to restore aligned 512x512 faces.

    Attributes:
        name: What it is listed as ("GFPGAN", "RestoreFormer", "CodeFormer").
        architecture: spandrel's architecture id, or a test stand-in's label.
        module: The torch module.
        device, dtype: Where and in which precision it runs.
        run: How to call `module` (see `runner_for`).
        identity: The file it came from, as it was when loaded; None for a stand-in.
    """

    name: str
    architecture: str
    module: Any
    device: torch.device
    dtype: torch.dtype
    run: Runner
    identity: FileIdentity | None = None

    def to(self, device: torch.device) -> None:
        """Move the weights (for `face_restoration_unload`), keeping the dtype."""
        self.module.to(device)
        self.device = device

    def restore(self, face_rgb: np.ndarray, codeformer_weight: float) -> np.ndarray:
        """One aligned face, (512, 512, 3) uint8 RGB, restored; same shape and type."""
        import numpy as np
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(face_rgb.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)
        tensor = tensor.unsqueeze(0).to(device=self.device, dtype=self.dtype)
        # fork_rng saves and restores a device generator only for these backends; the CPU's is always forked.
        forked = [self.device] if self.device.type in ("cuda", "mps", "xpu") else []
        with torch.random.fork_rng(devices=forked, device_type=self.device.type if forked else "cuda"):
            torch.manual_seed(NOISE_SEED)
            with torch.inference_mode():
                out = self.run(self.module, tensor, codeformer_weight)
                out = out[0].float().clamp_(-1.0, 1.0).add_(1.0).mul_(127.5).round_()
                array = out.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        if array.shape != (FACE_SIZE, FACE_SIZE, 3):
            raise UserError(f"face restoration model '{self.name}' returned a {array.shape} image instead of a "
                            f"{FACE_SIZE}x{FACE_SIZE} RGB face", field="face_restorer")
        return array


def runner_for(architecture: str) -> Runner:
    """How each architecture is called; all take and return faces in -1..1."""
    if architecture == GFPGAN_ARCH:
        return lambda module, face, weight: module(face, return_rgb=False)[0]
    if architecture == CODEFORMER_ARCH:
        return lambda module, face, weight: module(face, weight=weight)[0]
    return lambda module, face, weight: module(face)[0]


def extra_arches_installed() -> bool:
    """Whether `spandrel-extra-arches` (CodeFormer) can be imported; looks it up without importing it."""
    try:
        return importlib.util.find_spec(EXTRA_ARCHES_MODULE) is not None
    except (ImportError, ValueError):
        return False


def read_face_descriptor(path: Path, name: str) -> Any:
    """Load `path` with spandrel on the CPU and check that it is a face restoration model; returns the descriptor.

    Raises:
        UserError: The file is unreadable, corrupt, not recognised, does not fit its architecture, or is not a
            face restoration model (an upscaler, say).
    """
    from spandrel import ModelLoader

    from modules.engine.postprocess.spandrel_models import load_descriptor

    extra = "" if extra_arches_installed() else " (CodeFormer needs the optional spandrel-extra-arches package)"
    descriptor = load_descriptor(path, ModelLoader(device="cpu", registry=_registry()), "face restoration model",
                                 "face_restorer",
                                 f"its weights match none of GFPGAN, RestoreFormer or CodeFormer{extra}")
    check_face_model(descriptor, name, path)
    return descriptor


def check_face_model(descriptor: Any, name: str, path: Path) -> None:
    """Raise a UserError unless `descriptor` is a GFPGAN, RestoreFormer or CodeFormer from RGB to RGB."""
    arch = descriptor.architecture.id
    if getattr(descriptor, "purpose", None) != "FaceSR" or arch not in FACE_ARCHITECTURES:
        purpose = _PURPOSES.get(getattr(descriptor, "purpose", ""), getattr(descriptor, "purpose", "another task"))
        raise UserError(
            f"'{path.name}' (listed as '{name}') is not a face restoration model: spandrel reads it as "
            f"{descriptor.architecture.name}, a model for {purpose}", field="face_restorer")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UserError(
            f"'{path.name}' is a {arch} model for {descriptor.input_channels}-channel images; only RGB face "
            "models are supported", field="face_restorer")


def load_face_model(path: Path, name: str, device: torch.device, wanted: torch.dtype) -> FaceModel:
    """Read, check and place one face restoration file (see `read_face_descriptor`)."""
    from modules.engine.postprocess.spandrel_models import FileIdentity, place

    identity = FileIdentity.of(path)
    descriptor = read_face_descriptor(path, name)
    dtype = place(descriptor, device, wanted)
    arch = str(descriptor.architecture.id)
    log.info("loaded face restorer %s (%s, %s) on %s (%s)", name, arch, path.name, device,
             str(dtype).removeprefix("torch."))
    return FaceModel(name=name, architecture=arch, module=descriptor.model, device=device, dtype=dtype,
                     run=runner_for(arch), identity=identity)


def _registry() -> Any:
    """spandrel's registry, plus the extra architectures in a private copy when that package is installed."""
    from spandrel import MAIN_REGISTRY

    if not extra_arches_installed():
        return MAIN_REGISTRY
    try:
        from spandrel_extra_arches import EXTRA_REGISTRY
    except Exception as e:  # noqa: BLE001 - a broken optional install must not break GFPGAN
        log.warning("spandrel-extra-arches is installed but cannot be imported (%s); CodeFormer is unavailable", e)
        return MAIN_REGISTRY
    registry = MAIN_REGISTRY.copy()
    registry.add(*EXTRA_REGISTRY.architectures(), ignore_duplicates=True)
    return registry


_PURPOSES = {
    "SR": "super-resolution (an upscaler; put it in models/ESRGAN)",
    "Restoration": "image restoration (denoise/deblur/JPEG), not faces",
    "Inpainting": "inpainting",
    "FaceSR": "face restoration of an unsupported architecture",
}

