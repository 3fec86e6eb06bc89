"""The one job queue: every piece of GPU work (UI, REST API, extensions) is a typed request run in order."""

from modules.jobs.job import Job, JobCancelled, JobContext, JobState
from modules.jobs.queue import Executor, InProcessExecutor, JobQueue, JobType

__all__ = ["Executor", "InProcessExecutor", "Job", "JobCancelled", "JobContext", "JobQueue", "JobState", "JobType"]
