"""The backoff of a plugin's calls to a provider whose faults may pass.

One shape for every cloud plugin: jittered exponential waits (so that many plugins
throttled together do not come back together), bounded by a total time rather than a
count of attempts (so that the bound a user sets is the delay they can expect), and the
last fault raised as it was (so that the plugin can say what it was).
"""

from __future__ import annotations

from collections.abc import Callable

import tenacity


def retrying(seconds: float, passes: Callable[[BaseException], bool], *,
             longest_wait: float = 5) -> tenacity.Retrying:
    """Call a function again while ``passes`` says its fault may pass, for at most
    ``seconds``, waiting up to ``longest_wait`` seconds between calls."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(passes),
        stop=tenacity.stop_after_delay(seconds),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=longest_wait),
        reraise=True)
