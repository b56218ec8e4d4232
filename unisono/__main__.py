"""``python -m unisono`` is the same as the ``unisono`` console script."""

import sys

from unisono.cli import main

sys.exit(main())
