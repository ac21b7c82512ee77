"""``python -m pixelprune``: the same as the ``pixelprune`` command."""

import sys

from .cli import main

sys.exit(main())
