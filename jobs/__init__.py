"""The jobs of a WordPress VPS, one module per job. ``jobrunner list`` shows them."""
