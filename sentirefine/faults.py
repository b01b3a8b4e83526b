"""Named crash points for fault-injection tests.

``SENTIREFINE_KILL_AT=<point>[:<n>]`` makes the process SIGKILL itself the ``n``-th time (default
1st) it passes ``point``: the only way to prove that a crash at that exact place is resumable.
Unset (always, outside tests), :func:`crash_point` is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal

_passes: dict[str, int] = {}


def crash_point(point: str) -> None:
    """Die here with SIGKILL if the environment asks for it (tests only)."""
    target = os.environ.get("SENTIREFINE_KILL_AT")
    if not target:
        return
    name, _, nth = target.rpartition(":")
    if not nth.isdigit():  # no count given; point names may contain ':' themselves
        name, nth = target, "1"
    if name != point:
        return
    _passes[point] = _passes.get(point, 0) + 1
    if _passes[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
