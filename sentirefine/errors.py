"""Errors a user can act on.

Every failure that reaches the CLI is a :class:`SentirefineError`: it names the problem, says
what to do next (``hint``) and maps to a non-zero exit code, so scripts and schedulers can
tell a bad input from a crash.
"""

from __future__ import annotations


class SentirefineError(Exception):
    """Base class: a message naming the problem and an optional hint on what to do next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    def __reduce__(self) -> tuple:
        """Pickle with the hint: an error raised in a job's worker process reaches the command whole."""
        return (self.__class__, (self.message,), {"hint": self.hint})


class ConfigError(SentirefineError):
    """The configuration file or an environment override is invalid."""

    exit_code = 2


class InputDataError(SentirefineError):
    """An input file holds rows that cannot be imported as they are."""

    exit_code = 3


class StoreError(SentirefineError):
    """The SQLite store is missing, locked, of another schema version, or not a database."""

    exit_code = 4


class ModelLoadError(SentirefineError):
    """A model checkpoint is missing, corrupt, or does not match the expected vocabulary."""

    exit_code = 5


class TrainingError(SentirefineError):
    """Training could not complete (e.g. out of memory even at batch size 1, a single class)."""

    exit_code = 6


class WorkspaceBusyError(SentirefineError):
    """Another sentirefine process holds the workspace lock."""

    exit_code = 7


class UsageError(SentirefineError):
    """A command-line argument is out of range or names an unusable path (exit 2, like a bad config)."""

    exit_code = 2
