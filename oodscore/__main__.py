"""``python -m oodscore``: the command line."""

import sys

from oodscore.cli import main

sys.exit(main())
