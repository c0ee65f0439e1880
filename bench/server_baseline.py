"""Why the plugin server is not aiohttp's: the same http.client loop as rpc_throughput.py
against an aiohttp "hello" handler on a UNIX socket (the most any aiohttp-based plugin
could do, before any JSON-RPC work), with the default event loop and with uvloop."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time

from bench.rpc_throughput import run

ANSWER = b'{"jsonrpc":"2.0","result":{"Type":"","Descriptions":[]},"id":1}'


def _serve(path: str, use_uvloop: bool) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.UnixSite(runner, path).start()
        await asyncio.Event().wait()

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def main() -> None:
    for use_uvloop in (False, True):
        where = tempfile.mkdtemp(prefix="ikb", dir="/tmp")
        path = os.path.join(where, "aiohttp.sock")
        pid = os.fork()
        if pid == 0:
            try:
                _serve(path, use_uvloop)
            finally:  # never return into the parent's code (and its finally) in the child
                os._exit(1)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.02)
            run(path, 2000)
            rps, lat = run(path, 20000)
            loop = "uvloop" if use_uvloop else "asyncio"
            print(f"aiohttp hello ({loop:7s}): {rps:7.0f} calls/s  "
                  f"p99 {lat[int(len(lat) * 0.99)] * 1e3:.3f} ms")
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    main()
