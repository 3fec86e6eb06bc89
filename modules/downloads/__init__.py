"""Model downloads: one catalogue of known files and one manager that fetches them safely.

Every part of the studio that needs weights (the default checkpoint, upscalers, face restoration, extensions
such as SadTalker) goes through here, so resuming, checksums, atomic installs, progress and the "download it
by hand" message work the same everywhere.
"""

from modules.downloads.catalogue import Catalogue, CatalogueEntry, default_catalogue
from modules.downloads.manager import (
    JOB_TYPE,
    DownloadBusy,
    DownloadError,
    DownloadManager,
    DownloadRequest,
    DownloadResult,
    DownloadState,
    EntryStatus,
)
from modules.downloads.progress import DownloadProgress

__all__ = [
    "JOB_TYPE",
    "Catalogue",
    "CatalogueEntry",
    "DownloadBusy",
    "DownloadError",
    "DownloadManager",
    "DownloadProgress",
    "DownloadRequest",
    "DownloadResult",
    "DownloadState",
    "EntryStatus",
    "default_catalogue",
]
