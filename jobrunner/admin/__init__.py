"""Admin features: silences, instances, healthchecks check sync."""
