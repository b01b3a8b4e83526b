"""Named crash points for fault-injection tests.

``SENTIREFINE_KILL_AT=<point>[:<n>]`` makes the process SIGKILL itself the ``n``-th time (default
1st) it passes ``point``: the only way to prove that a crash at that exact place is resumable.
Unset (always, outside tests), :func:`crash_point` is a dictionary lookup and nothing else.

``SENTIREFINE_PAUSE_AT=<point>`` with ``SENTIREFINE_PAUSE_FILE=<file>`` writes the pid to ``file``
at ``point`` and waits (at most 10 minutes) until the file is deleted: a live process, holding
its locks, that a concurrency test can run a second command against.

``SENTIREFINE_FAULT_TRACE=<file>`` appends every point passed to ``file``, one name a line: the
fault suite records the exact order of points of an uninterrupted run and plans its kills on it.
"""

from __future__ import annotations

import os
import signal
import time

_passes: dict[str, int] = {}


def crash_point(point: str) -> None:
    """Die here with SIGKILL if the environment asks for it (tests only)."""
    trace = os.environ.get("SENTIREFINE_FAULT_TRACE")
    if trace:
        with open(trace, "a", encoding="utf-8") as handle:
            handle.write(point + "\n")
    if os.environ.get("SENTIREFINE_PAUSE_AT") == point:
        _pause(os.environ["SENTIREFINE_PAUSE_FILE"])
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


def _pause(path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(str(os.getpid()))
    deadline = time.monotonic() + 600
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
