"""``python -m hub`` — the same as the ``himalia`` command."""

import sys

from hub.cli import main

sys.exit(main())
