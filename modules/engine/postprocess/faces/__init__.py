"""Face restoration: GFPGAN v1.3/v1.4 and RestoreFormer, plus CodeFormer for those who install
spandrel-extra-arches themselves.

    faces = FaceRestorers(models, memory, settings_get)      # once, at start (the engine's `face_restorers`)
    faces.names()                                            # ["GFPGAN", "RestoreFormer"] as files are present
    result = faces.restore(image, "GFPGAN", visibility=0.8, check=ctx.check)
    result.image, result.faces, result.note                  # note: "no face found; image unchanged", ...

Importing this package imports neither torch, spandrel, facexlib, cv2 nor PIL; they load at the first restore.

Modules:
    restorers: `FaceRestorers` (list, load, restore), `FaceRestoreResult`, the A1111 names, `CODEFORMER_NOTE`.
    detect: facexlib RetinaFace detection from local weights, `FaceBox`, `FaceDetector`, FFHQ alignment.
    parse: facexlib ParseNet from local weights, `FaceParser`, the paste mask and the paste-back.
    networks: reading GFPGAN/RestoreFormer/CodeFormer files with spandrel, `FaceModel`.
    files: which weight files are used, where they live, and the "download it" messages.
"""

from modules.engine.postprocess.faces.detect import FaceBox, FaceDetector, RetinaFaceDetector
from modules.engine.postprocess.faces.networks import FaceModel
from modules.engine.postprocess.faces.parse import FaceParser, ParseNetParser
from modules.engine.postprocess.faces.restorers import (
    CODEFORMER,
    CODEFORMER_NOTE,
    GFPGAN,
    KNOWN_RESTORERS,
    NO_FACE_NOTE,
    RESTOREFORMER,
    FaceRestoreCancelled,
    FaceRestorerEntry,
    FaceRestoreResult,
    FaceRestorers,
)

__all__ = [
    "CODEFORMER",
    "CODEFORMER_NOTE",
    "GFPGAN",
    "KNOWN_RESTORERS",
    "NO_FACE_NOTE",
    "RESTOREFORMER",
    "FaceBox",
    "FaceDetector",
    "FaceModel",
    "FaceParser",
    "FaceRestoreCancelled",
    "FaceRestoreResult",
    "FaceRestorerEntry",
    "FaceRestorers",
    "ParseNetParser",
    "RetinaFaceDetector",
]
