"""A1111's "Restore faces" for txt2img and img2img: the face restorer the `face_restoration_model` setting names,
run on each decoded image before it is pasted back and saved, and recorded as `Face restoration: <name>`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modules.jobs import JobContext

if TYPE_CHECKING:
    from modules.engine.engine import Engine
    from modules.engine.requests import GenerationRequest


def check_face_restorer(engine: Engine, request: GenerationRequest) -> None:
    """Before any sampling: a missing or unknown restorer fails the job now, not after the images are made."""
    if request.restore_faces:
        engine.face_restorers.find(str(engine.settings_get("face_restoration_model")))


def restore_faces(engine: Engine, request: GenerationRequest, image: Any,
                  ctx: JobContext) -> tuple[Any, dict[str, Any]]:
    """`image` with its faces restored when the request asks, and the infotext parameters that says so."""
    if not request.restore_faces:
        return image, {}
    name = str(engine.settings_get("face_restoration_model"))
    result = engine.face_restorers.restore(image, name, check=ctx.check)
    if result.note and result.note not in ctx.job.notes:
        ctx.note(result.note)
    return result.image, {"Face restoration": name}
