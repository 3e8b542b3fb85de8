"""The smallest job: does nothing. bench/startup.py measures the runner's own cost with it."""

from jobrunner import JobContext, job


@job
def noop(ctx: JobContext) -> None:
    """Do nothing (startup benchmark)."""
