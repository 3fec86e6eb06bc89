"""/studio/v1/jobs: submit any registered job type and get an id at once; poll, list, cancel.

A1111's API has no job ids (its issue #3786). Here every request becomes a job on the one queue, so a client
can disconnect and fetch its result later, within the retention time.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from modules.jobs import Job, JobQueue


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="job type, e.g. txt2img, or one an extension registers")
    request: dict[str, Any] = Field(default_factory=dict, description="the request of that job type")


def describe(jobs: JobQueue, job: Job, with_result: bool) -> dict[str, Any]:
    body = job.summary()
    body["position"] = jobs.position(job)
    if with_result and job.result is not None:
        try:
            body["result"] = jsonable_encoder(job.result)
        except (TypeError, ValueError):
            body["result"] = None
            body["notes"].append("this job's result is not JSON; fetch it through its own route")
    return body


def router(jobs: JobQueue) -> APIRouter:
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
        return describe(jobs, jobs.get(job_id), with_result=True)

    @r.delete("/{job_id}")
    def cancel(job_id: str) -> dict[str, Any]:
        return describe(jobs, jobs.cancel(job_id), with_result=False)

    return r
