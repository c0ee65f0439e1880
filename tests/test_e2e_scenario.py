"""The original's end-to-end scenario (its ``scripts/e2e-test.sh`` at v0.5, with its
``docs/cattle.json`` and ``docs/cattle2.json``), run as it is written, with its fixed
waits, against our plugins and driven by our CLI: tests/e2e/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCENARIO = Path(__file__).parent / "e2e" / "e2e-test.sh"


def test_the_original_scenario_passes(home: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(SCENARIO)], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": PASS\n") == 8
    assert done.stdout.rstrip().endswith("ALL TESTS PASSED")
