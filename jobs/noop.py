"""The smallest job: does nothing. bench/startup.py measures the runner's own cost with it."""

from jobrunner import job


@job
def noop(ctx):
    """Do nothing (startup benchmark)."""
