"""The catalogue of model files the studio knows how to download.

Each entry says where a file comes from (a Hugging Face repo file or a GitHub release asset), how big it is,
its sha256 when we are sure of it, and which model folder it belongs in (A1111's folder names, so an
existing A1111 `models/` folder is used as it is).

Hashes and sizes are only written down when they are known for certain. An entry without a sha256 is
checked by size only (when the size is known), and the sha256 of what was downloaded is recorded in the
download result and the job notes, so it can be added here once confirmed.

Extensions (SadTalker, ...) add their own files with `Catalogue.add`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from modules.errors import NotFound

# Ids end up in file names (the .part file) and in URLs of the REST API, so keep them plain.
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")

_HF = "https://huggingface.co"
_GITHUB = "https://github.com"


@dataclass(frozen=True)
class CatalogueEntry:
    """One downloadable file.

    Attributes:
        id: Unique, stable id (lowercase letters, digits, ".", "_", "-"), e.g. "sd15-emaonly".
        name: What the UI shows, e.g. "Stable Diffusion 1.5 (pruned, EMA only)".
        url: Where the file is fetched from (https); Hugging Face `resolve` URLs or GitHub release assets.
        size: Exact size in bytes, or None when not known for certain.
        sha256: Lowercase hex sha256 of the whole file, or None when not known for certain.
        folder: The model kind folder it goes in (A1111 name: "Stable-diffusion", "ESRGAN", "GFPGAN", ...).
        filename: The file name inside that folder; a plain name, never a path.
        description: One line for the models page.
        licence_note: The licence the user accepts by downloading, when it is worth saying.
    """

    id: str
    name: str
    url: str
    size: int | None
    sha256: str | None
    folder: str
    filename: str
    description: str
    licence_note: str = ""

    def __post_init__(self) -> None:
        if not _ID_PATTERN.match(self.id):
            raise ValueError(f"invalid catalogue id {self.id!r}: use lowercase letters, digits, '.', '_', '-'")
        if urlsplit(self.url).scheme not in ("http", "https") or not urlsplit(self.url).netloc:
            raise ValueError(f"catalogue entry '{self.id}': url must be http(s), got {self.url!r}")
        if self.size is not None and self.size <= 0:
            raise ValueError(f"catalogue entry '{self.id}': size must be positive, got {self.size}")
        if self.sha256 is not None and not _SHA256_PATTERN.match(self.sha256):
            raise ValueError(f"catalogue entry '{self.id}': sha256 must be 64 lowercase hex digits")
        _check_plain_name(self.id, "folder", self.folder)
        # A filename with a separator or ".." could write outside the model folder.
        _check_plain_name(self.id, "filename", self.filename)

    @property
    def verified(self) -> bool:
        """True when the download is checked against a known sha256 (not just its size)."""
        return self.sha256 is not None


def _check_plain_name(entry_id: str, what: str, value: str) -> None:
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise ValueError(f"catalogue entry '{entry_id}': {what} must be a plain name, got {value!r}")


class Catalogue:
    """The known downloadable files, by id; safe to read and extend from several threads."""

    def __init__(self, entries: Iterable[CatalogueEntry] = ()) -> None:
        self._entries: dict[str, CatalogueEntry] = {}
        self._lock = threading.Lock()
        for entry in entries:
            self.add(entry)

    @classmethod
    def with_defaults(cls) -> Catalogue:
        """A catalogue holding the core files (`default_catalogue()`), ready for extensions to add to."""
        return cls(default_catalogue())

    def add(self, entry: CatalogueEntry) -> None:
        """Add an entry; a second entry with the same id is a ValueError (ids are what users click on)."""
        with self._lock:
            if entry.id in self._entries:
                raise ValueError(f"catalogue entry '{entry.id}' is already registered")
            self._entries[entry.id] = entry

    def get(self, entry_id: str) -> CatalogueEntry:
        """The entry with this id; NotFound (a 404 for the API) lists the valid ids."""
        with self._lock:
            entry = self._entries.get(entry_id)
            known = sorted(self._entries)
        if entry is None:
            raise NotFound(f"no downloadable file '{entry_id}'; known: {', '.join(known) or 'none'}", field="id")
        return entry

    def entries(self) -> list[CatalogueEntry]:
        """Every entry, in the order they were added."""
        with self._lock:
            return list(self._entries.values())

    def __iter__(self) -> Iterator[CatalogueEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        with self._lock:
            return entry_id in self._entries


def default_catalogue() -> tuple[CatalogueEntry, ...]:
    """The files the core studio uses: the default checkpoint, upscalers and face restoration weights.

    Where a hash and size are given they were cross-checked: the SD 1.5 hash is the one A1111 itself checks
    (`expected_sha256` in its `modules/sd_models.py`); the others agree across several independent public
    manifests that fetch these exact release URLs. RestoreFormer has no hash or size we are sure of.
    """
    return (
        CatalogueEntry(
            id="sd15-emaonly",
            name="Stable Diffusion 1.5 (pruned, EMA only)",
            # runwayml/stable-diffusion-v1-5 was taken down in 2024; this is the community-maintained copy
            # of the same files that current A1111 downloads from, byte for byte (same sha256).
            url=f"{_HF}/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors",
            size=4265146304,
            sha256="6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
            folder="Stable-diffusion",
            filename="v1-5-pruned-emaonly.safetensors",
            description="The default checkpoint A1111 downloads on first start; 512x512, about 4 GB.",
            licence_note="CreativeML Open RAIL-M",
        ),
        CatalogueEntry(
            id="realesrgan-x4plus",
            name="R-ESRGAN 4x+",
            url=f"{_GITHUB}/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
            size=67040989,
            sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
            folder="ESRGAN",
            filename="RealESRGAN_x4plus.pth",
            description="General-purpose 4x upscaler for photos and renders.",
            licence_note="BSD-3-Clause",
        ),
        CatalogueEntry(
            id="realesrgan-x4plus-anime6b",
            name="R-ESRGAN 4x+ Anime6B",
            url=f"{_GITHUB}/xinntao/Real-ESRGAN/releases/download/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
            size=17938799,
            sha256="f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
            folder="ESRGAN",
            filename="RealESRGAN_x4plus_anime_6B.pth",
            description="4x upscaler tuned for anime and illustrations; smaller and faster.",
            licence_note="BSD-3-Clause",
        ),
        CatalogueEntry(
            id="gfpgan-v1.4",
            name="GFPGAN v1.4",
            # The asset A1111 downloads; the same file is also attached to the v1.3.4 release.
            url=f"{_GITHUB}/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
            size=348632874,
            sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
            folder="GFPGAN",
            filename="GFPGANv1.4.pth",
            description="Face restoration (GFPGAN); also needs the two facexlib files below.",
            licence_note="Apache-2.0 (code); see the GFPGAN repository for the weights' terms",
        ),
        CatalogueEntry(
            id="restoreformer",
            name="RestoreFormer",
            url=f"{_GITHUB}/TencentARC/GFPGAN/releases/download/v1.3.4/RestoreFormer.pth",
            size=None,
            sha256=None,
            folder="GFPGAN",
            filename="RestoreFormer.pth",
            description="Alternative face restoration model from the GFPGAN releases.",
            licence_note="See the RestoreFormer repository for the weights' terms",
        ),
        CatalogueEntry(
            id="facexlib-detection-resnet50",
            name="facexlib RetinaFace (ResNet-50) face detector",
            url=f"{_GITHUB}/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
            size=109497761,
            sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
            # A1111 keeps facexlib's weights next to GFPGAN's (it points facexlib's save_dir there).
            folder="GFPGAN",
            filename="detection_Resnet50_Final.pth",
            description="Finds faces before GFPGAN or CodeFormer restore them.",
            licence_note="MIT (facexlib)",
        ),
        CatalogueEntry(
            id="facexlib-parsing-parsenet",
            name="facexlib ParseNet face parser",
            url=f"{_GITHUB}/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
            size=85331193,
            sha256="3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
            folder="GFPGAN",
            filename="parsing_parsenet.pth",
            description="Face segmentation used to paste restored faces back smoothly.",
            licence_note="MIT (facexlib)",
        ),
    )
