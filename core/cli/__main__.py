"""``python -m poolkit.cli``: the ``poolkit`` command."""

import sys

from poolkit.cli import main

sys.exit(main())
