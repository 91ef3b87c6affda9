"""``python -m sast``: the ``sast`` command; ``torchrun --nproc-per-node N -m sast train …``
runs it on every rank (:mod:`sast.infra.distributed`)."""

import sys

from sast.cli import main

if __name__ == "__main__":
    sys.exit(main())
