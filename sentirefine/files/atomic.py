"""Writing a user-visible file all at once: a temp file beside it, then one rename.

A reader (or a crash) sees the old file or the new one, never half of one; and because
``os.replace`` swaps the directory entry, a symlink planted at the target is replaced, never
followed: a symlinked rejects file or report cannot overwrite what it points to.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sentirefine.errors import UsageError


def check_output_path(path: Path, what: str = "output file") -> Path:
    """``path`` if a file can be written there, else a :class:`UsageError` saying why and what to do."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory", hint=f"name a file, e.g. {path / 'out'}")
    if not path.parent.is_dir():
        raise UsageError(f"{what} {path}: directory {path.parent} does not exist",
                         hint=f"create it first (`mkdir -p '{path.parent}'`) or choose another path")
    return path


@contextmanager
def atomic_write(path: Path, mode: str = "w", *, encoding: str | None = "utf-8",
                 newline: str | None = None, errors: str | None = None, what: str = "output file") -> Iterator[IO]:
    """Open a temp file in ``path``'s directory for writing; on success rename it over ``path``.

    On any exception the temp file is removed and ``path`` is left as it was.
    """
    path = check_output_path(path, what)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    binary = "b" in mode
    try:
        text_args = {} if binary else {"encoding": encoding, "newline": newline, "errors": errors}
        with os.fdopen(fd, mode, **text_args) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(directory: Path) -> Iterator[Path]:
    """Yield an empty ``<dir>.tmp`` to fill; on success swap it in for ``directory`` by two renames.

    Readers see the old directory or the new one, never half of one. Between the two renames the
    old one is ``<dir>.old``: a kill there leaves it as the last complete version, so it is removed
    only once a complete ``directory`` exists again (checkpoints: a model, a pretraining state).
    On an exception the half-filled temp directory is removed and ``directory`` is left as it was.
    """
    directory = Path(directory)
    tmp, old = directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
