"""``python -m infrakit``: the same as the ``infrakit`` command."""

from infrakit.cli.main import main

main()
