"""The ``sast`` command: ``train``, ``evaluate``, ``deploy``, ``export``, ``report``, ``sweep``,
``reproduce``, ``datasets``.

Holds :mod:`~sast.cli.options` (the config options every training command shares, generated
from :class:`~sast.config.RunConfig`, and the argument types), :mod:`~sast.cli.parser` (one
sub-parser per command), :mod:`~sast.cli.commands` (what each command does) and here
:func:`main`. The top floor: may import any room; nothing imports it.
"""

from __future__ import annotations

import sys

from sast.cli.commands import (
    cmd_datasets,
    cmd_deploy,
    cmd_evaluate,
    cmd_export,
    cmd_report,
    cmd_reproduce,
    cmd_sweep,
    cmd_train,
)
from sast.cli.parser import build_parser
from sast.infra.runtime import tune_process


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_process()
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "deploy": cmd_deploy,
                "export": cmd_export, "report": cmd_report,
                "sweep": cmd_sweep, "reproduce": cmd_reproduce, "datasets": cmd_datasets}
    try:
        return commands[args.command](args)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"sast {args.command}: error: {err}", file=sys.stderr)
        return 2
