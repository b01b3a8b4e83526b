"""Import under hostile input, through the real CLI: every line imported as it stands or rejected by number.

Each case here lost, merged or changed rows (or crashed) before the import was rebuilt on
``sentirefine.files.userfile`` / ``sentirefine.files.tabular`` (issue 25, items 1-4, 13, 14, 16-18).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sentirefine.cli import app
from sentirefine.data.ingest import import_file
from sentirefine.data.store import Store

runner = CliRunner()
HEADER = "id\tdocument\tlabel\n"


def invoke(ws: Path, *args: str):
    return runner.invoke(app, ["--log-format", "text", "--workspace", str(ws), *args])


def rows_of(ws: Path, split: str = "train") -> list[tuple[str, str, int]]:
    with Store(ws / "sentences.db") as store:
        return store.conn.execute("SELECT id, text, original_label FROM sentences WHERE split=? ORDER BY sid",
                                  (split,)).fetchall()


def tsv(rows: list[tuple[str, str, int]]) -> str:
    return HEADER + "".join(f"{i}\t{t}\t{y}\n" for i, t, y in rows)


def test_a_quote_opening_a_tsv_text_swallows_nothing(tmp_path):
    rows = [(str(i), f"리뷰 {i}", i % 2) for i in range(200)]
    rows[1] = ("1", '"명대사" 하나로 충분', 1)  # opens a quote, closed three rows later
    rows[4] = ("4", 'he said "go', 0)
    rows[7] = ("7", 'end quote" here', 1)
    data = tmp_path / "q.tsv"
    data.write_text(tsv(rows), encoding="utf-8")
    result = invoke(tmp_path / "ws", "import", str(data))
    assert result.exit_code == 0, result.output
    assert "read 200, inserted 200" in result.output
    assert rows_of(tmp_path / "ws") == rows


def test_a_bom_keeps_the_id_column_and_reimport_without_it_is_a_no_op(tmp_path):
    rows = [("a1", "좋다", 1), ("a2", "별로", 0)]
    with_bom, plain = tmp_path / "bom.tsv", tmp_path / "plain.tsv"
    with_bom.write_bytes(b"\xef\xbb\xbf" + tsv(rows).encode())
    plain.write_text(tsv(rows), encoding="utf-8")
    assert invoke(tmp_path / "ws", "import", str(with_bom)).exit_code == 0
    assert rows_of(tmp_path / "ws") == rows
    again = invoke(tmp_path / "ws", "import", str(plain))
    assert again.exit_code == 0 and "inserted 0, already present 2" in again.output


def test_csv_bom_and_quoted_fields(tmp_path):
    data = tmp_path / "c.csv"
    data.write_bytes(b"\xef\xbb\xbfid,text,label\r\nx1,\"a, \"\"quoted\"\" text\",1\r\nx2,\"two\nlines\",0\r\n")
    result = invoke(tmp_path / "ws", "import", str(data))
    assert result.exit_code == 0, result.output
    assert rows_of(tmp_path / "ws") == [("x1", 'a, "quoted" text', 1), ("x2", "two\nlines", 0)]
    assert "span several lines (first at line 3)" in result.output


def test_an_unclosed_csv_quote_costs_one_row(tmp_path):
    body = "text,label\n" + '"never closed,1\n' + "".join(f"row {i},{i % 2}\n" for i in range(10))
    data = tmp_path / "c.csv"
    data.write_text(body, encoding="utf-8")
    result = invoke(tmp_path / "ws", "import", str(data))
    assert result.exit_code == 3
    assert "read 11, inserted 10" in result.output and "rejected 1" in result.output
    assert "c.csv:2: quoted field not closed" in result.output
    assert [t for _, t, _ in rows_of(tmp_path / "ws")] == [f"row {i}" for i in range(10)]


# -- the round trip, as a property ---------------------------------------------------------------------
_ALPHABET = st.sampled_from(list('"\',;\r 가나다라마바사아자차카타파하ㅋㅎ😀🎬é\\=+-@') + list("abcXYZ019"))
_TEXT = st.text(_ALPHABET, min_size=1, max_size=40).map(lambda t: unicodedata.normalize("NFC", t).strip()).filter(
    lambda t: bool(t) and "\r" not in t[-1:])


def _write(path: Path, rows: list[tuple[str, str, int]], fmt: str, bom: bool) -> None:
    buffer = io.StringIO(newline="")
    if fmt == "tsv":
        buffer.write(tsv(rows))
    else:
        writer = csv.writer(buffer)
        writer.writerow(["id", "text", "label"])
        writer.writerows(rows)
    data = (b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(_TEXT, min_size=1, max_size=12), fmt=st.sampled_from(["tsv", "csv"]),
       gz=st.booleans(), bom=st.booleans())
def test_any_text_round_trips_unchanged_with_the_counts(texts, fmt, gz, bom):
    rows = [(f"id{i}", t, i % 2) for i, t in enumerate(texts)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (f"data.{fmt}" + (".gz" if gz else ""))
        _write(path, rows, fmt, bom)
        with Store(Path(tmp) / "s.db", create=True) as store:
            report = import_file(store, path, split="train", rejects_dir=Path(tmp) / "rejects")
            stored = store.conn.execute("SELECT id, text, original_label FROM sentences ORDER BY sid").fetchall()
    assert (report.read, report.inserted, report.rejected) == (len(rows), len(rows), 0), report.summary()
    assert stored == rows


# -- bounded memory, all-or-nothing, symlinks ----------------------------------------------------------
def test_one_huge_gzipped_line_is_rejected_with_flat_memory(tmp_path):
    data = tmp_path / "huge.tsv.gz"
    with gzip.open(data, "wb", compresslevel=1) as out:
        out.write(HEADER.encode() + b"1\tok\t1\n2\t")
        block = "가".encode() * (1 << 20)  # 3 MiB of UTF-8 a block, 256 blocks: a 768 MiB line
        for _ in range(256):
            out.write(block)
        out.write(b"\t1\n3\talso ok\t0\n")
    # VmHWM, not ru_maxrss: Linux carries a forking parent's peak (pytest's, with models loaded) across exec.
    code = ("import re, sys; from sentirefine.cli import app\n"
            "try: app(sys.argv[1:])\nexcept SystemExit as e: code = e.code\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
            "print('MAXRSS', hwm, 'CODE', code)")
    out = subprocess.run([sys.executable, "-c", code, "--workspace", str(tmp_path / "ws"), "import", str(data)],
                         capture_output=True, text=True, timeout=600)
    maxrss_mib = int(out.stdout.split("MAXRSS")[1].split()[0]) / 1024
    assert "CODE 3" in out.stdout and "rejected 1" in out.stdout and "huge.tsv.gz:3: line longer than" in out.stdout
    assert maxrss_mib < 300, f"peak RSS {maxrss_mib:.0f} MiB for a 768 MiB line"  # the line would need > 768
    assert [i for i, _, _ in rows_of(tmp_path / "ws")] == ["1", "3"]


def test_strict_imports_nothing_from_any_file(tmp_path):
    train, gold = tmp_path / "train.tsv", tmp_path / "gold.tsv"
    train.write_text(tsv([("t1", "좋다", 1), ("t2", "싫다", 0)]), encoding="utf-8")
    gold.write_text(tsv([("g1", "최고", 1)]) + "g2\t\t0\n", encoding="utf-8")
    result = invoke(tmp_path / "ws", "import", "--strict", str(train), "--gold", str(gold))
    assert result.exit_code == 3 and "gold.tsv:3: empty text" in result.output
    assert "nothing imported from any file" in result.output
    assert rows_of(tmp_path / "ws") == [] and rows_of(tmp_path / "ws", "gold") == []


def test_without_strict_the_summary_says_what_each_file_committed(tmp_path):
    train, gold = tmp_path / "train.tsv", tmp_path / "gold.tsv.gz"
    train.write_text(tsv([("t1", "좋다", 1), ("t2", "싫다", 0)]), encoding="utf-8")
    gold.write_bytes(gzip.compress(tsv([(f"g{i}", f"리뷰 {i}", i % 2) for i in range(3000)]).encode())[:-200])
    result = invoke(tmp_path / "ws", "import", str(train), "--gold", str(gold))
    assert result.exit_code == 3
    assert "gold.tsv.gz ends early (truncated gzip?)" in result.output
    assert f"nothing imported from {gold}; already committed: {train} (2 rows read, 2 inserted)" in result.output
    assert len(rows_of(tmp_path / "ws")) == 2 and rows_of(tmp_path / "ws", "gold") == []


def test_a_symlinked_rejects_file_is_replaced_not_followed(tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text(HEADER + "1\tok\t1\n2\t\t0\n", encoding="utf-8")
    ws, victim = tmp_path / "ws", tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    invoke(ws, "import", str(data))  # learn the rejects file's name
    (rejects,) = (ws / "rejects").iterdir()
    rejects.unlink()
    rejects.symlink_to(victim)
    invoke(ws, "import", str(data))
    assert victim.read_text(encoding="utf-8") == "precious"
    assert rejects.is_file() and not rejects.is_symlink() and "empty text" in rejects.read_text(encoding="utf-8")


# -- clear errors for files that are not what they claim -----------------------------------------------
def test_compression_is_recognised_by_content_not_name(tmp_path):
    plain_named_gz, gz_named_tsv = tmp_path / "a.tsv.gz", tmp_path / "b.tsv"
    plain_named_gz.write_text(tsv([("1", "좋다", 1)]), encoding="utf-8")
    gz_named_tsv.write_bytes(gzip.compress(tsv([("2", "싫다", 0)]).encode()))
    assert invoke(tmp_path / "ws", "import", str(plain_named_gz)).exit_code == 0
    assert invoke(tmp_path / "ws", "import", str(gz_named_tsv)).exit_code == 0
    assert rows_of(tmp_path / "ws") == [("1", "좋다", 1), ("2", "싫다", 0)]


@pytest.mark.parametrize(("encoding", "named"), [("cp949", "cp949"), ("euc-kr", "cp949"), ("cp1252", "cp1252")])
def test_a_legacy_encoding_is_named_with_the_conversion(tmp_path, encoding, named):
    texts = ["정말 재밌어요", "별로였다"] if named == "cp949" else ["très bien", "déçu"]
    data = tmp_path / "legacy.tsv"
    data.write_bytes(tsv([(str(i), t, i % 2) for i, t in enumerate(texts)]).encode(encoding))
    result = invoke(tmp_path / "ws", "import", str(data))
    assert result.exit_code == 3, result.output
    assert f"is not UTF-8: it looks like {named}" in result.output and f"iconv -f {named} -t utf-8" in result.output
    assert "Traceback" not in result.output


def test_a_directory_or_a_missing_file_is_named(tmp_path):
    result = invoke(tmp_path / "ws", "import", str(tmp_path))
    assert result.exit_code == 3 and "is a directory, not a file" in result.output
    result = invoke(tmp_path / "ws", "import", str(tmp_path / "nope.tsv"))
    assert result.exit_code == 3 and "not found" in result.output


def test_decomposed_hangul_is_stored_composed_and_reimports_as_the_same_row(tmp_path):
    nfd, nfc = tmp_path / "mac.tsv", tmp_path / "win.tsv"
    nfd.write_text(tsv([("k1", unicodedata.normalize("NFD", "재밌어요"), 1)]), encoding="utf-8")
    nfc.write_text(tsv([("k1", "재밌어요", 1)]), encoding="utf-8")
    assert invoke(tmp_path / "ws", "import", str(nfd)).exit_code == 0
    assert rows_of(tmp_path / "ws") == [("k1", "재밌어요", 1)]
    again = invoke(tmp_path / "ws", "import", str(nfc))
    assert again.exit_code == 0 and "already present 1" in again.output


def test_idless_files_of_the_same_name_never_collide_and_rejects_stay_apart(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "data.csv", tmp_path / "b" / "data.csv"
    first.write_text("text,label\n좋다,1\n,0\n", encoding="utf-8")
    second.write_text("text,label\n싫다,0\n,1\n", encoding="utf-8")
    assert invoke(tmp_path / "ws", "import", str(first), "--gold", str(second)).exit_code == 3
    assert [t for _, t, _ in rows_of(tmp_path / "ws")] == ["좋다"]
    assert [t for _, t, _ in rows_of(tmp_path / "ws", "gold")] == ["싫다"]
    rejects = sorted(p.name for p in (tmp_path / "ws" / "rejects").iterdir())
    assert len(rejects) == 2 and rejects[0].startswith("gold-data.csv") and rejects[1].startswith("train-data.csv")


def test_the_rejects_summary_aggregates_by_reason(tmp_path):
    data = tmp_path / "d.tsv"
    data.write_text(HEADER + "".join(f"{i}\tsame\t1\n{i}\tagain\t0\n" for i in range(198)), encoding="utf-8")
    result = invoke(tmp_path / "ws", "import", str(data))
    assert result.exit_code == 3
    assert "rejected by reason: duplicate id 198" in result.output
    assert len(result.output) < 2000, len(result.output)
    assert len((tmp_path / "ws" / "rejects").iterdir().__next__().read_text().splitlines()) == 199


def test_file_is_read_the_same_from_any_directory(tmp_path, monkeypatch):
    data = tmp_path / "d.tsv"
    data.write_text(tsv([("1", "좋다", 1)]), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert invoke(tmp_path / "ws", "import", os.path.relpath(data, elsewhere)).exit_code == 0
    assert rows_of(tmp_path / "ws") == [("1", "좋다", 1)]


def test_an_idless_file_imported_under_the_earlier_id_scheme_reimports_as_a_no_op(tmp_path):
    """Workspaces made before ids carried the file digest hold "<name>:<line>" ids: no duplicates on re-import."""
    data = tmp_path / "data.csv"
    data.write_text("text,label\n좋다,1\n싫다,0\n", encoding="utf-8")
    ws = tmp_path / "ws"
    assert invoke(ws, "import", str(data)).exit_code == 0
    with Store(ws / "sentences.db") as store, store.transaction() as conn:  # as an older version wrote them
        conn.execute("UPDATE sentences SET id = 'data.csv:' || substr(id, instr(id, ':') + 1)")
    again = invoke(ws, "import", str(data))
    assert again.exit_code == 0 and "inserted 0, already present 2" in again.output
    assert [i for i, _, _ in rows_of(ws)] == ["data.csv:2", "data.csv:3"]
