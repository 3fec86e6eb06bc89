"""Loading upscaler model files with spandrel, and telling the user plainly when a file is not one.

spandrel reads `.pth`/`.pt`/`.ckpt` (through its restricted unpickler, so a pickle cannot run code) and
`.safetensors`, detects the architecture from the state dict's keys and shapes, and builds the network:
ESRGAN (old and new RRDBNet layouts, Real-ESRGAN included), Real-ESRGAN Compact, SwinIR, HAT, DAT, SPAN, OmniSR
and the other single-image SR architectures of its main package. `spandrel_extra_arches` is deliberately not
installed (non-commercial and copyleft code).

A file fails in one of four ways, each a `UserError` that names the file:

* unreadable: corrupt, truncated, empty, or a pickle with forbidden globals;
* not recognised: spandrel has no architecture for its keys (a random dict of tensors, an SD checkpoint, a LoRA);
* recognised but wrong: the keys match an architecture, the shapes do not (e.g. RRDBNet with num_grow_ch != 32);
* not an upscaler: a restoration model (scale 1), a face model (GFPGAN), an inpainting model (LaMa), or one
  whose input is not RGB.

Importing this module does not import torch or spandrel; the functions do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.errors import UserError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileIdentity:
    """A model file as it is now; a changed size or mtime means the cached model is stale."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        st = path.stat()
        return cls(str(path.resolve()), st.st_size, st.st_mtime_ns)


@dataclass
class LoadedUpscaler:
    """An upscaler on its device, ready to run.

    Attributes:
        name: The upscaler's name in the list (the file stem).
        identity: The file it came from, as it was when loaded.
        descriptor: spandrel's `ImageModelDescriptor`; calling it upscales a (1, 3, h, w) tensor.
        scale: Whole-number scale of one pass.
        architecture: spandrel's name for the architecture ("ESRGAN", "RealESRGAN Compact", "SwinIR", ...).
        device, dtype: Where and in which precision it runs.
        tiles: False when the model tiles internally (spandrel's `ModelTiling.INTERNAL`) and must see the whole
            image.
        multiple_of: Input sizes it needs without padding (pixel-unshuffle factor, attention window), for tiles.
        minimum: Smallest input edge it accepts without padding.
    """

    name: str
    identity: FileIdentity
    descriptor: Any
    scale: int
    architecture: str
    device: torch.device
    dtype: torch.dtype
    tiles: bool
    multiple_of: int = 1
    minimum: int = 0


def read_descriptor(path: Path, name: str) -> Any:
    """Load `path` with spandrel on the CPU and check that it is an RGB upscaler; returns the descriptor.

    Raises:
        UserError: The file is unreadable, not recognised, does not match its architecture, or is not an upscaler.
    """
    from spandrel import ModelLoader

    descriptor = load_descriptor(
        path, ModelLoader(device="cpu"), "upscaler model", "upscaler",
        "its weights match no architecture that spandrel knows (ESRGAN, Real-ESRGAN, Compact, SwinIR, HAT, DAT, "
        "SPAN, ...)")
    check_upscaler(descriptor, name, path)
    return descriptor


def load_descriptor(path: Path, loader: Any, what: str, field: str, unrecognised: str) -> Any:
    """`path` read by a spandrel `loader`, every failure a UserError naming the file: unreadable, corrupt, not
    recognised (`unrecognised` says what was expected), or weights that do not fit the architecture they match.
    `what` names the kind of file ("upscaler model") and `field` the request field the message points at."""
    from spandrel import UnsupportedModelError

    try:
        with open(path, "rb"):
            pass  # torch reports a truncated zip as an OSError too, so tell "cannot open" apart first
    except OSError as e:
        raise UserError(f"cannot read {what} file {path}: {e.strerror or e}", field=field) from e
    try:
        state_dict = loader.load_state_dict_from_file(path)
    except Exception as e:  # noqa: BLE001 - torch, pickle, zipfile and safetensors each raise their own types
        log.warning("cannot load %s %s: %s", what, path, e)
        raise UserError(
            f"{what} file '{path.name}' in {path.parent} is corrupt, truncated or not a model file "
            f"({type(e).__name__}: {_first_line(e)}); download it again", field=field) from e
    try:
        return loader.load_from_state_dict(state_dict)
    except UnsupportedModelError as e:
        article = "an" if what[0] in "aeiou" else "a"
        raise UserError(f"'{path.name}' is not {article} {what} this app recognises: {unrecognised}",
                        field=field) from e
    except Exception as e:  # noqa: BLE001 - an architecture's loader raises RuntimeError/KeyError/... on bad shapes
        log.warning("cannot build %s %s: %s", what, path, e)
        raise UserError(
            f"'{path.name}' looks like a known architecture, but its weights do not fit it "
            f"({type(e).__name__}: {_first_line(e)})", field=field) from e


def check_upscaler(descriptor: Any, name: str, path: Path) -> None:
    """Raise a UserError unless `descriptor` is a single-image SR model from RGB to RGB with a scale above 1."""
    from spandrel import ImageModelDescriptor

    arch = descriptor.architecture.name
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.purpose != "SR" or descriptor.scale <= 1:
        raise UserError(
            f"'{name}' ({path.name}) is not an upscaler: it is a {arch} model for "
            f"{_PURPOSES.get(descriptor.purpose, descriptor.purpose)} at scale {descriptor.scale}x", field="upscaler")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UserError(
            f"'{name}' ({path.name}) is a {arch} upscaler for {descriptor.input_channels}-channel images; "
            "only RGB (3-channel) upscalers are supported", field="upscaler")


def place(descriptor: Any, device: torch.device, wanted: torch.dtype) -> torch.dtype:
    """Move `descriptor` to `device` in eval mode; half precision on an accelerator when the app runs in fp16/bf16
    and the architecture supports it (spandrel marks those that give NaNs or black images in fp16), else fp32.

    Returns the dtype it now runs in.
    """
    import torch

    dtype = torch.float32
    if device.type != "cpu":
        if wanted == torch.float16 and descriptor.supports_half:
            dtype = torch.float16
        elif wanted == torch.bfloat16 and descriptor.supports_bfloat16:
            dtype = torch.bfloat16
    descriptor.to(device=device, dtype=dtype)
    descriptor.eval()
    return dtype


def load_upscaler(path: Path, name: str, device: torch.device, wanted: torch.dtype) -> LoadedUpscaler:
    """Read, check and place one upscaler file (see `read_descriptor` and `place`)."""
    from spandrel import ModelTiling

    identity = FileIdentity.of(path)
    descriptor = read_descriptor(path, name)
    dtype = place(descriptor, device, wanted)
    log.info("loaded upscaler %s: %s %dx on %s (%s)", name, descriptor.architecture.name, descriptor.scale,
             device, str(dtype).removeprefix("torch."))
    return LoadedUpscaler(
        name=name,
        identity=identity,
        descriptor=descriptor,
        scale=int(descriptor.scale),
        architecture=descriptor.architecture.name,
        device=device,
        dtype=dtype,
        tiles=descriptor.tiling != ModelTiling.INTERNAL,
        multiple_of=int(descriptor.size_requirements.multiple_of),
        minimum=int(descriptor.size_requirements.minimum),
    )


_PURPOSES = {
    "Restoration": "restoration (denoise/deblur/JPEG) without upscaling",
    "FaceSR": "face restoration",
    "Inpainting": "inpainting",
    "SR": "super-resolution",
}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else "no details"
