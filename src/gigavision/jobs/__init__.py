"""Background jobs: a Huey queue (SQLite file embedded, Redis at scale) plus a ``jobs`` table users can watch.

A job is a registered function ``fn(ctx: JobContext, params) -> result``. ``Workspace.jobs`` submits it to
the queue (REST, long work) or runs it inline with a progress callback (CLI); either way its status,
progress, result or error land in the ``jobs`` table and its files in ``<workspace>/jobs/<id>/output``.
"""

from gigavision.jobs.context import JobCancelled, JobContext
from gigavision.jobs.manager import JOB_STATUSES, JobManager

__all__ = ["JOB_STATUSES", "JobCancelled", "JobContext", "JobManager"]
