"""The scheduler: runs scheduled functions when they are due, and crons.

:class:`Scheduler` is both the runtime's scheduler service (``ctx.scheduler``
in mutations and actions, see :mod:`basalt.runtime.scheduling`) and the runner
that executes due jobs; whoever runs the server or a test owns it. Crons are
declared in the app's ``crons.py`` with :func:`cron_jobs`.
"""

from .crons import CronJob, CronJobs, cron_jobs
from .executor import SchedulerStats
from .runner import Scheduler

__all__ = ["CronJob", "CronJobs", "Scheduler", "SchedulerStats", "cron_jobs"]
