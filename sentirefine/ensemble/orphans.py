"""Worker processes end with the command that started them, even when it was SIGKILLed.

A spawned pool or job worker waits on a queue whose other end its siblings hold too, so the
command's death never reaches it as end-of-file: killed with ``kill -9`` (or by the OOM killer),
a command used to leave its idle workers behind, each holding its models' memory (640 MB per
job worker after a 20k-row BERT fold fit), for good. Each worker therefore watches its parent.
"""

from __future__ import annotations

import os
import threading
import time

CHECK_SECONDS = 1.0


def exit_when_orphaned(interval: float = CHECK_SECONDS) -> None:
    """Start a daemon thread that ends this process once its parent is gone (it is re-parented).

    ``os._exit``: nothing of a dead command's work is left to flush; its stages resume from
    their records when the same command is run again.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-when-orphaned", daemon=True).start()
