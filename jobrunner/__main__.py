"""``python -m jobrunner`` is the ``jobrunner`` command."""

import sys

from jobrunner.cli import main

sys.exit(main())
