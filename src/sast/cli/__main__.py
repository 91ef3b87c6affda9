"""``python -m sast.cli``: the ``sast`` command."""

import sys

from sast.cli import main

sys.exit(main())
