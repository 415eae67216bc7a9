"""``python -m qiter``: the command line, as the ``qiter`` script runs it."""

import sys

from qiter.cli import main

sys.exit(main())
