"""The few answers /sdapi/v1 gives beyond the app's `UserError` family: not yet available (501), an unknown
script (422, as A1111 answers), busy (409), and a failed generation job (the status the job recorded).

All of them are `UserError`s, so the app's one exception handler turns them into `{error, detail, field}`.
"""

from __future__ import annotations

from types import MappingProxyType

from modules.errors import UserError
from modules.jobs import Job

# The `error` name a failed job's answer carries, by the status the job queue recorded.
_ERROR_NAMES: MappingProxyType[int, str] = MappingProxyType(
    {400: "UserError", 403: "AccessDenied", 404: "NotFound", 409: "Busy", 501: "NotImplemented"})


class NotAvailable(UserError):
    """A feature SD Studio does not have yet: 501, `error` "NotImplemented"."""

    status_code = 501

    def to_json(self) -> dict[str, str | None]:
        return {"error": "NotImplemented", "detail": self.message, "field": self.field}


class UnknownScript(UserError):
    """A script title no extension handles; A1111 answers 422 for this."""

    status_code = 422


class Busy(UserError):
    """An action that cannot run while a generation job is running."""

    status_code = 409


class JobFailed(UserError):
    """A generation job that failed; carries the status the job queue recorded for it."""

    def __init__(self, job: Job) -> None:
        status = job.error_status or 500
        super().__init__(job.error or "the job failed")
        self.status_code = status
        self.error_name = _ERROR_NAMES.get(status, "UserError" if status < 500 else "GenerationError")

    def to_json(self) -> dict[str, str | None]:
        return {"error": self.error_name, "detail": self.message, "field": self.field}


def not_available(feature: str) -> NotAvailable:
    """The 501 for `feature` ("img2img", "face restoration"), worded the same everywhere."""
    return NotAvailable(f"{feature} is not available yet")
