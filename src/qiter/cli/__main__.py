import sys

from qiter.cli import main

sys.exit(main())
