"""Views of the jobs: health, metrics, the status page, late jobs, failed units."""
