"""/studio/v1/downloads: which catalogue files are present, and fetching the missing ones as jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modules.api.jobs import describe
from modules.downloads import JOB_TYPE, DownloadManager
from modules.jobs import JobQueue


def router(downloads: DownloadManager, jobs: JobQueue) -> APIRouter:
    r = APIRouter(prefix="/studio/v1/downloads", tags=["downloads"])

    @r.get("")
    def listing() -> dict[str, Any]:
        return {"files": [s.to_json() for s in downloads.statuses()]}

    @r.post("/{entry_id}", status_code=202)
    def start(entry_id: str) -> dict[str, Any]:
        downloads.catalogue.get(entry_id)  # 404 with the valid ids before anything is queued
        return describe(jobs, jobs.submit(JOB_TYPE, {"id": entry_id}), with_result=False)

    @r.get("/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        return describe(jobs, jobs.get(job_id), with_result=True)

    return r
