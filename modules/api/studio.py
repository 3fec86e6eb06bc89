"""/studio/v1: our own REST routes beyond A1111: extensions, the cluster (jobs are in `api.jobs`)."""

from __future__ import annotations

import sys
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from modules.cluster.status import ClusterStatus, cluster_status
from modules.services import Services


class InstallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="git URL of the extension")
    branch: str | None = Field(default=None, max_length=200)
    folder_name: str | None = Field(default=None, max_length=100)


class Message(BaseModel):
    message: str


def router(services: Services) -> APIRouter:
    r = APIRouter(prefix="/studio/v1", tags=["studio"])
    manager = services.extension_manager

    @r.get("/cluster", response_model=ClusterStatus)
    def cluster() -> ClusterStatus:
        """The workers (one per GPU with --cluster, else this machine), what each has loaded and runs, and the
        queue."""
        return cluster_status(services)

    @r.get("/health")
    def health() -> dict[str, Any]:
        # torch_loaded shows whether anything has needed torch yet: the page never does.
        return {"status": "ok", "notices": services.notices, "torch_loaded": "torch" in sys.modules}

    @r.get("/extensions")
    def extensions() -> dict[str, Any]:
        """Every extension with its state (loaded, failed with traceback, disabled) and load time."""
        return manager.overview()

    @r.post("/extensions/install", response_model=Message)
    def install(req: InstallRequest) -> Message:
        return Message(message=manager.install_from_url(req.url, req.branch, req.folder_name))

    @r.post("/extensions/{extension_id}/enable", response_model=Message)
    def enable(extension_id: str) -> Message:
        return Message(message=manager.set_enabled(extension_id, True))

    @r.post("/extensions/{extension_id}/disable", response_model=Message)
    def disable(extension_id: str) -> Message:
        return Message(message=manager.set_enabled(extension_id, False))

    @r.get("/extensions/{extension_id}/updates")
    def check_updates(extension_id: str) -> dict[str, Any]:
        return manager.check_for_updates(extension_id)

    @r.post("/extensions/{extension_id}/update")
    def update(extension_id: str) -> dict[str, Any]:
        return manager.update(extension_id)

    @r.delete("/extensions/{extension_id}", response_model=Message)
    def uninstall(extension_id: str) -> Message:
        return Message(message=manager.uninstall(extension_id))

    return r
