"""``python -m jobrunner`` is the ``jobrunner`` command."""

import sys

from .cli import main

sys.exit(main())
