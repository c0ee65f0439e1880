"""``python -m infrakit``: the same as the ``infrakit`` command.

``plugin start`` runs each plugin as ``python -m infrakit [--log N] plugin run KIND:NAME``.
That command line takes a short path that leaves the command-line interface unloaded, and
a kind that reaches nothing over TLS from its event loop runs without OpenSSL: a plugin
process holds only what it serves. Any other command line, or an error in this one, goes to
the full interface, which says what is wrong.
"""

from __future__ import annotations

import os
import sys


def _plugin_run(args: list[str]) -> tuple[int, str] | None:
    """(log level, ``KIND[:NAME]``) for ``[--log N] plugin run KIND[:NAME]``; else None."""
    from infrakit.rpc.logs import LOG_LEVELS

    level = os.environ.get("INFRAKIT_LOG", "4")
    if args[:1] == ["--log"]:
        level, args = args[1] if len(args) > 1 else "", args[2:]
    if len(args) != 3 or args[:2] != ["plugin", "run"] or args[2].startswith("-"):
        return None
    if not level.isdigit() or int(level) not in LOG_LEVELS:
        return None
    return int(level), args[2]


def _serve_kind(level: int, spec: str) -> bool:
    """Run the plugin ``spec`` names until SIGINT or SIGTERM; False if it names no kind."""
    from infrakit.cli.kinds import parse_kind, serve_kind

    try:
        kind, name = parse_kind(spec)
    except ValueError:
        return False
    serve_kind(kind, name, level)
    return True


def _main() -> None:
    wanted = _plugin_run(sys.argv[1:])
    try:
        if wanted is not None and _serve_kind(*wanted):
            return
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # said as the full interface says it, which is loaded for it
        if os.environ.get("INFRAKIT_DEBUG"):
            raise
        from infrakit.cli.main import error_message

        print(f"Error: {error_message(exc)}", file=sys.stderr)
        sys.exit(1)
    from infrakit.cli.main import main

    main()


_main()
