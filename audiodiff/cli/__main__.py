"""``python -m audiodiff.cli``: the ``audiodiff`` command (the tests and benchmark scripts run it so)."""

import sys

from audiodiff.cli import main

sys.exit(main())
