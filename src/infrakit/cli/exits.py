"""The exit statuses of ``infrakit``, one meaning each, so that a script can tell a mistake
in its command line from a failure, and a wait that gave up from either."""

from __future__ import annotations

import click

OK = 0
ERROR = 1
"""The command failed: a plugin refused, could not be reached, a file was bad."""
USAGE = 2
"""The command line itself is wrong (click's own status for a usage error)."""
WAIT_TIMEOUT = 3
"""A ``--wait`` ran out of time: what was asked may still happen."""
CHANGES = 4
"""``group diff``: committing the file would change the group (0: it would not)."""
INTERRUPTED = 130
"""Ctrl-C, as a shell reports a command killed by SIGINT."""

HELP = f"""\b
Exit status:
  {OK}    success
  {ERROR}    an error: a plugin refused or did not answer, a file was bad
  {USAGE}    a usage error in the command line
  {WAIT_TIMEOUT}    a --wait gave up before what it waited for happened
  {CHANGES}    group diff: the spec would change the group
  {INTERRUPTED}  interrupted (Ctrl-C)"""
"""The exit statuses as the root command's help shows them."""


class WaitTimeout(click.ClickException):
    """A ``--wait`` that ran out of time, said as an error, with its own exit status."""

    exit_code = WAIT_TIMEOUT
