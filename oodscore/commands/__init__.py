"""Subcommands of the ``oodscore`` command line, one module each, in ``--help`` order."""

COMMANDS: list[str] = ["list", "score", "eval", "calibrate", "detect", "demo"]
