"""REST routes under /ext/sadtalker (behind --api-auth like every extension route).

- POST /ext/sadtalker/generate: multipart (`image` and `audio` files, the other fields as form values) or a JSON
  TalkingHeadRequest with base64 media; waits for the job on the studio's queue and answers with the MP4
  (`?response=json` answers with the job's result instead). Headers X-Seed and X-Frames describe the video.
- GET /ext/sadtalker/jobs/{job_id}/video: the MP4 of a finished "sadtalker" job submitted to /studio/v1/jobs.
- GET /ext/sadtalker/models?size=256&preprocess=crop: which files are missing and their download ids.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request, ...) at
# registration, and they name classes imported inside register_routes.
import json
from pathlib import Path
from typing import Any

from .request import PREPROCESS_CHOICES
from .runner import JOB_TYPE, TalkingHeadRunner

_LIST_FIELDS = ("input_yaw", "input_pitch", "input_roll")
_FILE_FIELDS = ("image", "audio", "ref_eyeblink", "ref_pose")


def register_routes(api: Any, runner: TalkingHeadRunner) -> None:
    from fastapi import Request
    from fastapi.responses import FileResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool

    async def generate(request: Request) -> Any:
        body = await _request_fields(request, api)
        job = api.studio.submit(JOB_TYPE, body)
        await run_in_threadpool(job.wait)
        result = _finished(api, job)
        if request.query_params.get("response") == "json":
            return JSONResponse(result)
        return _video_response(result)

    def job_video(job_id: str) -> Any:
        job = api.studio.job(job_id)
        if job.type != JOB_TYPE:
            raise api.NotFound(f"job '{job_id}' is a {job.type} job, not a SadTalker video", field="job_id")
        if not job.state.finished:
            raise api.UserError(f"job '{job_id}' is still {job.state.value}; poll /studio/v1/jobs/{job_id}",
                                field="job_id")
        return _video_response(_finished(api, job))

    def models(size: int = 256, preprocess: str = "crop") -> dict[str, Any]:
        if size not in (256, 512):
            raise api.UserError(f"size must be 256 or 512, not {size}", field="size")
        if preprocess not in PREPROCESS_CHOICES:
            raise api.UserError(f"preprocess must be one of {', '.join(PREPROCESS_CHOICES)}", field="preprocess")
        missing = runner.missing(size, preprocess)
        return {"missing": missing, "downloads": runner.download_ids(missing), "ready": not missing}

    def _video_response(result: dict[str, Any]) -> Any:
        path = Path(result["video"])
        return FileResponse(path, media_type="video/mp4", filename=path.name,
                            headers={"X-Seed": str(result["seed"]), "X-Frames": str(result["frames"])})

    api.add_api_route("/generate", generate, methods=["POST"])
    api.add_api_route("/jobs/{job_id}/video", job_video)
    api.add_api_route("/models", models)


async def _request_fields(request: Any, api: Any) -> dict[str, Any]:
    """The request body as TalkingHeadRequest fields: JSON as it is; multipart files as base64."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise api.UserError("send multipart/form-data with image and audio files, or a JSON body") from None
        if not isinstance(body, dict):
            raise api.UserError("the JSON body must be an object")
        return body
    form = await request.form()
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if hasattr(value, "read"):  # an uploaded file
            if key not in _FILE_FIELDS:
                raise api.UserError(f"unexpected file field '{key}'; files go in {', '.join(_FILE_FIELDS)}",
                                    field=key)
            fields[key] = _b64(await value.read())
            if key == "audio" and value.filename:
                fields["audio_name"] = value.filename
        elif key in _LIST_FIELDS:
            fields[key] = _angles(value, key, api)
        else:
            fields[key] = value
    return fields


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def _angles(value: str, key: str, api: Any) -> list[float]:
    """"-20 30 10", "-20,30,10" or a JSON list."""
    text = value.strip()
    try:
        parsed = json.loads(text) if text.startswith("[") else [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise api.UserError(f"{key} must be numbers in degrees, e.g. '-20 30 10'", field=key) from None
    return [float(v) for v in parsed]


def _finished(api: Any, job: Any) -> dict[str, Any]:
    if job.state.value == "done":
        return dict(job.result)
    if job.state.value == "cancelled":
        error = api.UserError("the video job was cancelled")
        error.status_code = 409
        raise error
    error = api.UserError(job.error or "the video job failed")
    error.status_code = job.error_status or 500
    raise error

