"""/studio/v1/jobs: submit any registered job type and get an id at once; poll, list, cancel.

A1111's API has no job ids (its issue #3786). Here every request becomes a job on the one queue, so a client
can disconnect and fetch its result later, within the retention time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from modules.api.images import encode_b64, encode_png_b64
from modules.engine.results import GenerationResult
from modules.jobs import Job, JobQueue, JobState


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="job type, e.g. txt2img, or one an extension registers")
    request: dict[str, Any] = Field(default_factory=dict, description="the request of that job type")


def describe(jobs: JobQueue, job: Job, with_result: bool, setting: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """A job as JSON: state and progress; with `with_result`, the live preview while it runs and the result
    (images as base64 with their infotext embedded) once it is done."""
    body = job.summary()
    body["position"] = jobs.position(job)
    if not with_result:
        return body
    if job.state is JobState.RUNNING and job.progress.preview is not None:
        body["preview"] = encode_png_b64(job.progress.preview)
    if isinstance(job.result, GenerationResult) and setting is not None:
        body["result"] = _generation(job.result, setting)
    elif job.result is not None:
        try:
            body["result"] = jsonable_encoder(job.result)
        except (TypeError, ValueError):
            body["result"] = None
            body["notes"].append("this job's result is not JSON; fetch it through its own route")
    return body


def _generation(result: GenerationResult, setting: Callable[[str], Any]) -> dict[str, Any]:
    return {
        "images": [encode_b64(g.image, g.infotext, setting) for g in result.images],
        "infotexts": result.infotexts,
        "seeds": [g.seed for g in result.images],
        "files": [g.path.name if g.path else None for g in result.images],
        "info": result.info,
    }


def router(jobs: JobQueue, setting: Callable[[str], Any]) -> APIRouter:
    r = APIRouter(prefix="/studio/v1/jobs", tags=["jobs"])

    @r.post("", status_code=202)
    def submit(req: SubmitRequest) -> dict[str, Any]:
        return describe(jobs, jobs.submit(req.type, req.request), with_result=False)

    @r.get("")
    def listing() -> dict[str, Any]:
        return {"jobs": [describe(jobs, j, with_result=False) for j in jobs.list()],
                "types": [t.name for t in jobs.types()]}

    @r.get("/{job_id}")
    def get(job_id: str) -> dict[str, Any]:
        return describe(jobs, jobs.get(job_id), with_result=True, setting=setting)

    @r.delete("/{job_id}")
    def cancel(job_id: str) -> dict[str, Any]:
        return describe(jobs, jobs.cancel(job_id), with_result=False)

    return r
