"""Reading the files a user hands us: data, review answers, configs, lexicons, extra text.

Every such file goes through here so that the same hostile inputs fail the same clear way:

* **compression by content, not name**: gzip is recognised by its magic bytes, so a plain file
  named ``.gz`` and gzip data named ``.tsv`` both read; truncated or corrupt gzip is an
  :class:`InputDataError` naming the file and the last line read, never ``Aborted.``;
* **a UTF-8 byte-order mark** (Excel, Notepad) is dropped: it would otherwise glue itself to the
  first header name (``\\ufeffid``) and silently cost the file its id column;
* **another encoding** (cp949/EUC-KR from Korean Windows, cp1252 from Western Windows) is
  recognised from the first block and named, with the ``iconv`` line that converts it, instead
  of every row being rejected as "invalid UTF-8";
* **bounded memory per line**: a line is read at most ``max_chars`` characters at a time; the
  rest of an over-long line is skipped in pieces and the line is reported as such, so a 3 GiB
  line costs no more memory than a short one.

Lines are split on ``\\n`` only (a ``\\r`` inside a text stays; a CRLF ending is removed),
because NSMC-style TSV has no quoting: one physical line is one row.
"""

from __future__ import annotations

import codecs
import gzip
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sentirefine.errors import InputDataError

GZIP_MAGIC = b"\x1f\x8b"
BOM = "\ufeff"
_PROBE_BYTES = 64 * 1024
# Byte-level encodings a Korean or Western user's tools write when they do not write UTF-8.
_LEGACY_ENCODINGS = (("cp949", "cp949 (EUC-KR, Korean Windows)"), ("cp1252", "cp1252 (Windows Western)"))
_READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError)


@dataclass(frozen=True, slots=True)
class Line:
    """One physical line: its 1-based number, its text (no line ending) and whether it was cut."""

    number: int
    text: str
    overlong: bool = False


def check_readable(path: Path, what: str = "input file") -> Path:
    """``path`` as a readable regular file, or an :class:`InputDataError` saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise InputDataError(f"{what} {path} is a directory, not a file", hint="pass the path of the file itself")
    if not path.exists():
        raise InputDataError(f"{what} not found: {path}", hint="check the path (relative paths start "
                                                               "from the directory the command runs in)")
    if not path.is_file():
        raise InputDataError(f"{what} {path} is not a regular file", hint="pass a file, not a device or pipe")
    return path


STDIN = Path("-")  # the name a command takes for its standard input


def _open_stdin() -> tuple[BinaryIO, bytes]:
    """Standard input's bytes, gunzipped when they are gzip, and its first block (peeked, not consumed)."""
    import sys

    raw = io.BufferedReader(sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer,
                            buffer_size=_PROBE_BYTES)
    if raw.peek(2)[:2] == GZIP_MAGIC:
        raw = io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), buffer_size=_PROBE_BYTES)  # type: ignore[arg-type]
    return raw, raw.peek(_PROBE_BYTES)[:_PROBE_BYTES]  # type: ignore[return-value]


def _open_binary(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped when its content (not its name) is gzip."""
    raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    raw.seek(0)
    return raw


def sniff_encoding(sample: bytes) -> str | None:
    """None if ``sample`` is UTF-8 (a character cut at its end allowed), else the likely encoding's name."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(sample, final=False)
        return None
    except UnicodeDecodeError:
        pass
    for codec, name in _LEGACY_ENCODINGS:
        try:
            text = sample.decode(codec)
        except UnicodeDecodeError:
            continue
        if codec != "cp949" or any("\uac00" <= ch <= "\ud7a3" for ch in text):  # cp949 only if it gives Hangul
            return name
    return "an unknown encoding"


def _file_encoding(probe: bytes) -> str | None:
    """The legacy encoding a whole file is in, judged from its first block; None if it is UTF-8.

    Only when at least two lines hold non-ASCII bytes and none of them decodes as UTF-8: a UTF-8
    file with a damaged row keeps its good rows (that row alone is rejected as invalid UTF-8).
    """
    lines = [line for line in probe.split(b"\n")[:-1] or [probe] if any(b >= 0x80 for b in line)]
    if len(lines) < 2 or any(sniff_encoding(line) is None for line in lines):
        return None
    return sniff_encoding(probe)


def _encoding_error(path: Path, name: str) -> InputDataError:
    codec = name.split()[0] if name.split()[0] in {c for c, _ in _LEGACY_ENCODINGS} else "ENCODING"
    return InputDataError(
        f"{path} is not UTF-8: it looks like {name}",
        hint=f"convert it first, e.g. `iconv -f {codec} -t utf-8 '{path}' > '{path}.utf8'`, and pass the new file",
    )


def _read_error(path: Path, exc: BaseException, after_line: int) -> InputDataError:
    kind = "ends early (truncated gzip?)" if isinstance(exc, EOFError) else f"cannot be read ({exc})"
    where = f" after line {after_line}" if after_line else ""
    return InputDataError(f"{path} {kind}{where}",
                          hint="check the file is complete (e.g. `gzip -t` for .gz) and pass it again")


@contextmanager
def open_text(path: Path, what: str = "input file") -> Iterator[io.TextIOWrapper]:
    """The file (or standard input, :data:`STDIN`) as text: gunzipped by content, BOM dropped,
    legacy encodings refused with a hint.

    Undecodable bytes later in the file become surrogates (``surrogateescape``), so the one row
    holding them is rejected rather than the whole file.
    """
    try:
        if path == STDIN:  # a pipe: the first block is peeked, since it cannot be read twice
            binary, probe = _open_stdin()
        else:
            path = check_readable(path, what)
            binary = _open_binary(path)
            probe = binary.read(_PROBE_BYTES)
            binary.seek(0)
    except _READ_ERRORS as exc:
        raise _read_error(path, exc, 0) from exc
    encoding = _file_encoding(probe.removeprefix(codecs.BOM_UTF8))
    if encoding:
        binary.close()
        raise _encoding_error(path, encoding)
    handle = io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="\n")
    if probe.startswith(codecs.BOM_UTF8):
        handle.read(1)
    try:
        yield handle
    finally:
        handle.close()


def iter_lines(path: Path, *, max_chars: int, what: str = "input file") -> Iterator[Line]:
    """Every physical line of ``path``, each read with at most ``max_chars`` characters in memory.

    A line longer than that is yielded once, cut, with ``overlong=True``; its remainder is read
    and dropped in ``max_chars`` pieces. Read errors (truncated gzip) name the last good line.
    """
    number = 0
    with open_text(path, what) as handle:
        try:
            while True:
                piece = handle.readline(max_chars + 1)
                if not piece:
                    return
                number += 1
                if len(piece) > max_chars and not piece.endswith("\n"):
                    _skip_rest_of_line(handle, max_chars)
                    yield Line(number, piece[:max_chars], overlong=True)
                else:
                    yield Line(number, _strip_eol(piece))
        except _READ_ERRORS as exc:
            raise _read_error(path, exc, number) from exc


def _skip_rest_of_line(handle: io.TextIOWrapper, piece_chars: int) -> None:
    """Read and drop the rest of the current line, ``piece_chars`` at a time (memory stays flat)."""
    while (rest := handle.readline(piece_chars)) and not rest.endswith("\n"):
        pass


def _strip_eol(line: str) -> str:
    """Remove the line ending (LF or CRLF); a ``\\r`` elsewhere in the text is kept."""
    if line.endswith("\n"):
        line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
    return line


def read_text(path: Path, what: str = "file", *, max_bytes: int = 64 * 1024 * 1024) -> str:
    """A small user file (config, JSON, lexicon) whole, as strict UTF-8 without BOM, or a clear error."""
    path = check_readable(path, what)
    try:
        with _open_binary(path) as binary:
            data = binary.read(max_bytes + 1)
    except _READ_ERRORS as exc:
        raise _read_error(path, exc, 0) from exc
    if len(data) > max_bytes:
        raise InputDataError(f"{what} {path} is larger than {max_bytes} bytes", hint="is this the right file?")
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _encoding_error(path, sniff_encoding(data) or "an unknown encoding") from exc
