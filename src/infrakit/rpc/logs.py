"""The log of a plugin process: records at its ``--log`` level and above, on stderr.

Apart from the command-line interface, which uses it too, so that a plugin process started
by ``python -m infrakit plugin run`` sets up its log without loading click.
"""

from __future__ import annotations

import sys

#: ``--log`` levels as the reference numbers them (logrus: panic .. debug), as
#: :mod:`logging` levels.
LOG_LEVELS = {0: 60, 1: 50, 2: 40, 3: 30, 4: 20, 5: 10}


def configure_logging(level: int) -> None:
    """Send log records at ``--log`` level ``level`` and above to stderr (the last call
    decides: ``--log`` may be given before a sub-command and again after it).

    :mod:`logging` is imported here, not at the top: CLI commands that only make a few
    calls leave it unimported at the default level, to keep their start-up short."""
    import logging

    logging.basicConfig(
        level=LOG_LEVELS[level], stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True,
    )
