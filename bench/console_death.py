"""How long a member's death takes to show in the web console, in a real browser.

A group of ``--size`` members of the process instance plugin (poll ``--poll`` s) is shown
by ``infrakit ui`` in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium). ``--kills`` times, a member's process is killed (SIGKILL); the time
is taken from the kill to the moment the page, never reloaded, no longer lists the member,
and to the moment it lists a replacement. The page is read by selenium every 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.stack import PARENT_HELP, plugin_stack, wait
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient
from infrakit.spi.group import GroupSpec
from tests.console_browser import browser


def _members(driver: object) -> set[str]:
    script = ("return [...document.querySelectorAll('#members tbody tr')]"
              ".map(r => r.dataset.member)")
    return set(driver.execute_script(script))  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    with plugin_stack("instance-process", "flavor-vanilla", "group", poll=args.poll,
                      parent=args.parent) as stack, \
            RPCClient(stack.socket("group"), timeout=60) as conn:
        group = GroupClient(conn)
        group.commit_group(GroupSpec(id="web", properties={
            "Allocation": {"Size": args.size},
            "Instance": {"Plugin": "instance-process",
                         "Properties": {"Command": ["sleep", "3600"], "StopGrace": 1}},
            "Flavor": {"Plugin": "flavor-vanilla", "Properties": {}}}), False)
        ui = subprocess.Popen([sys.executable, "-m", "infrakit", "ui"], env=stack.env,
                              stdout=subprocess.PIPE, text=True)
        driver = browser()
        try:
            link = ""
            while not link:
                found = re.search(r"http://\S+", ui.stdout.readline())  # type: ignore[union-attr]
                link = found.group(0) if found else ""
            driver.get(link)
            driver.get(link.split("/ui/")[0] + "/ui/group/web")
            wait(lambda: len(_members(driver)) == args.size, 60)
            _kill_and_time(driver, stack.home, args)
        finally:
            driver.quit()
            ui.terminate()
            ui.wait()
            group.destroy_group("web")


def _kill_and_time(driver: object, home: Path, args: argparse.Namespace) -> None:
    state = home / "instance-process" / "instance-process"
    gone, back = [], []
    for _ in range(args.kills):
        wait(lambda: len(_members(driver)) == args.size, 60)
        victim = sorted(_members(driver))[0]
        pid = int(json.loads((state / f"{victim}.json").read_text())["PID"])
        assert pid > 1
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait(lambda victim=victim: victim not in _members(driver), 60)  # type: ignore[misc]
        gone.append(time.monotonic() - killed)
        wait(lambda: len(_members(driver)) == args.size, 60)
        back.append(time.monotonic() - killed)
    print(f"group of {args.size}, poll {args.poll:g} s, {args.kills} kills: the page showed "
          f"the member gone after median {statistics.median(gone):.2f} s (min "
          f"{min(gone):.2f}, max {max(gone):.2f}), its replacement after median "
          f"{statistics.median(back):.2f} s (max {max(back):.2f})")


if __name__ == "__main__":
    main()
