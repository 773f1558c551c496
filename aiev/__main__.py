"""``python -m aiev STEP ...`` is ``aiev STEP ...``."""

import sys

from aiev.cli import main

sys.exit(main())
