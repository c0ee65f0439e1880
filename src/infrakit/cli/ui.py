"""``infrakit ui``: the web console, served for this machine."""

from __future__ import annotations

import click


@click.command("ui")
@click.option("--name", default="group", show_default=True,
              help="The group plugin or manager whose groups to show (its socket's name).")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="The port on 127.0.0.1 to serve on (default: a free one).")
def command(name: str, port: int) -> None:
    """Serve the web console on 127.0.0.1 and print a one-time login link.

    The console shows every group of the plugin NAME (the manager, or a group plugin):
    size, ready and up-to-date members and status; and, per group, its members, its event
    history, the progress of a rolling update, its usage and its spec. Pages update live.
    From it you can set a group's size, pause, resume or cancel its rolling update, and
    replace or destroy a member (each destructive action asks first).

    It talks to the plugin through its socket, as you (the admin role). The link printed
    logs in one browser, once, within 10 minutes; run the command again for another.
    Nothing is fetched from the network: the page's assets ship with infrakit. Ctrl-C
    stops it.

    To serve the console to other machines, give the manager a TCP listener
    (infrakit manager --listen ...): it serves the console at https://HOST:PORT/ui/, where
    one logs in with a token of its tokens file and may do what the token's role allows.
    """
    from infrakit.console.local import serve_locally
    from infrakit.rpc import eventloop
    from infrakit.rpc.paths import socket_path

    def announce(url: str) -> None:
        click.echo(f"The infrakit console of {name!r} is at:\n\n    {url}\n\n"
                   "Open it in a browser on this machine; the link works once. Ctrl-C stops.")

    eventloop.run(serve_locally(socket_path(name), port, announce))
