"""Which weight files face restoration uses, where it looks for them, and what it says when one is missing.

Everything lives in A1111's `models/GFPGAN` folder (the model registry's "GFPGAN" kind): the restoration models
and facexlib's detector and parser, which A1111 also keeps there. Nothing is ever downloaded from here; a missing
file gets a message naming the file, the folder, and the catalogue id that `modules.downloads` fetches it by.

Importing this module imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

from modules.errors import UserError

# The model registry kind whose folders hold every file below.
KIND = "GFPGAN"
# A1111 keeps CodeFormer in its own folder, `models/Codeformer`, beside `models/GFPGAN`.
CODEFORMER_FOLDER = "Codeformer"

DETECTION_FILE = "detection_Resnet50_Final.pth"
DETECTION_ID = "facexlib-detection-resnet50"
PARSING_FILE = "parsing_parsenet.pth"
PARSING_ID = "facexlib-parsing-parsenet"
GFPGAN_FILE = "GFPGANv1.4.pth"
GFPGAN_ID = "gfpgan-v1.4"
RESTOREFORMER_FILE = "RestoreFormer.pth"
RESTOREFORMER_ID = "restoreformer"
# facexlib's file names start with these; such files are helpers, never restoration models.
HELPER_PREFIXES = ("detection_", "parsing_", "alignment_", "headpose_", "assessment_", "recognition_", "matting_")


def is_helper(filename: str) -> bool:
    """True for facexlib's own weight files (detector, parser, ...), which share the folder with the models."""
    return filename.lower().startswith(HELPER_PREFIXES)


def find_file(folders: tuple[Path, ...], filename: str) -> Path | None:
    """`filename` in the first of `folders` that has it, or None."""
    for folder in folders:
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None


def download_hint(filename: str, folder: Path | None, entry_id: str) -> str:
    """How to get `filename`, in the words of `modules.downloads`: the catalogue id, then the manual route."""
    from modules.downloads.catalogue import default_catalogue

    entry = next((e for e in default_catalogue() if e.id == entry_id), None)
    where = str(folder) if folder is not None else "the models/GFPGAN folder"
    by_hand = f", or by hand from {entry.url} into {where} as {filename}" if entry is not None else ""
    return f"Download '{entry_id}' on the models page (POST /studio/v1/downloads/{entry_id}){by_hand}."


def missing_file(filename: str, folder: Path | None, entry_id: str, purpose: str, field: str = "face_restorer"
                 ) -> UserError:
    """The error for a weight file that is not there (nothing is downloaded behind the user's back)."""
    where = str(folder) if folder is not None else "the models/GFPGAN folder (the GFPGAN model kind is not set up)"
    return UserError(f"{purpose} needs {filename} in {where}, and it is not there. "
                     f"{download_hint(filename, folder, entry_id)}", field=field)
