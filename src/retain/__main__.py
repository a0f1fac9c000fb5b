"""``python -m retain``: the command line."""

import sys

from retain.cli import main

sys.exit(main())
