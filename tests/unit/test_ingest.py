"""Import validation: every bad row is reported with its line, nothing is silently dropped."""

from __future__ import annotations

import gzip

import pytest

from sentirefine.data.ingest import import_file
from sentirefine.data.store import Store
from sentirefine.errors import InputDataError

HEADER = "id\tdocument\tlabel\n"


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.db", create=True)
    yield s
    s.close()


def _write(path, body: str | bytes):
    data = body.encode("utf-8") if isinstance(body, str) else body
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _import(store, path, **kw):
    return import_file(store, path, split="train", rejects_dir=path.parent / "rejects", **kw)


def test_nsmc_tsv_gz_with_extra_columns(store, tmp_path):
    body = "id\tmovie_id\trating\tdocument\tlabel\n1\t9\t10\t재밌어요\t1\n2\t9\t1\t별로\t0\n"
    path = _write(tmp_path / "t.tsv.gz", body)
    report = _import(store, path)
    assert (report.read, report.inserted, report.rejected) == (2, 2, 0)
    assert store.conn.execute("SELECT id, text, current_label, group_key FROM sentences ORDER BY sid").fetchall() == [
        ("1", "재밌어요", 1, "9"), ("2", "별로", 0, "9")]


def test_plain_text_label_csv_uses_line_numbers_as_ids(store, tmp_path):
    path = _write(tmp_path / "t.csv", 'text,label\n"great, really",1\nawful,0\n')
    report = _import(store, path)
    assert report.inserted == 2
    ids = [r[0] for r in store.conn.execute("SELECT id FROM sentences ORDER BY sid")]
    assert [i.split("@")[0] for i in ids] == ["t.csv", "t.csv"] and [i.split(":")[-1] for i in ids] == ["2", "3"]
    assert _import(store, path).already_present == 2  # the same file again: a no-op


BAD_ROWS = [
    ("7\t\t1\n", "empty text"),
    ("7\tok\t2\n", "label '2' not in"),
    ("7\tok\tpositive\n", "label 'positive' not in"),
    ("7\tok\n", "wrong column count"),
    ("7\tok\t1\textra\n", "wrong column count"),
    ("7\tnul\x00byte\t1\n", "NUL byte"),
    (b"7\tbad \xff\xfe utf8\t1\n", "invalid UTF-8"),
    ("7\t" + "x" * 6000 + "\t1\n", "longer than store.max_text_chars"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS)
def test_each_bad_row_is_rejected_with_line_and_reason(store, tmp_path, row, reason):
    body = HEADER.encode() + b"1\tfine\t1\n" + (row if isinstance(row, bytes) else row.encode()) + b"3\talso fine\t0\n"
    path = _write(tmp_path / "t.tsv", body)
    report = _import(store, path)
    assert report.inserted == 2 and report.rejected == 1
    assert any(reason in e for e in report.examples), report.examples
    assert f"{path}:3:" in report.examples[0]
    rejects = report.rejects_path.read_text(encoding="utf-8").splitlines()
    assert len(rejects) == 2 and rejects[1].startswith("3\t")


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS[:3])
def test_strict_fails_at_first_bad_row_and_imports_nothing(store, tmp_path, row, reason):
    path = _write(tmp_path / "t.tsv", HEADER + "1\tfine\t1\n" + row)
    with pytest.raises(InputDataError, match=f"{path}:3: .*{reason[:10]}"):
        _import(store, path, strict=True)
    assert store.count() == 0


def test_duplicate_ids_in_file_are_rejected(store, tmp_path):
    path = _write(tmp_path / "t.tsv", HEADER + "1\ta\t1\n1\tb\t0\n")
    report = _import(store, path)
    assert report.inserted == 1 and report.rejected == 1
    assert "duplicate id '1' (first on line 2)" in report.examples[0]


def test_reimport_is_idempotent_and_conflicts_are_rejected(store, tmp_path):
    path = _write(tmp_path / "t.tsv", HEADER + "1\ta\t1\n2\tb\t0\n")
    _import(store, path)
    again = _import(store, path)
    assert (again.inserted, again.already_present, again.rejected) == (0, 2, 0)
    changed = _write(tmp_path / "u.tsv", HEADER + "1\ta\t0\n")
    report = _import(store, changed)
    assert report.rejected == 1 and "already in the store" in report.examples[0]
    assert store.count() == 2


def test_missing_columns_and_empty_file(store, tmp_path):
    with pytest.raises(InputDataError, match="lacks a text column"):
        _import(store, _write(tmp_path / "t.tsv", "id\tfoo\tbar\n1\t2\t3\n"))
    with pytest.raises(InputDataError, match="is empty"):
        _import(store, _write(tmp_path / "e.tsv", ""))


def test_injected_noise_keeps_truth_aside(store, tmp_path):
    rows = "".join(f"{i}\ttext {i}\t{i % 2}\n" for i in range(1000))
    path = _write(tmp_path / "t.tsv", HEADER + rows)
    report = _import(store, path, noise_rate=0.2, noise_seed=3)
    assert 150 < report.noise_flipped < 250
    assert store.reference_accuracy() == pytest.approx(1 - report.noise_flipped / 1000)
    # original_label is the (noisy) label as given; truth is only in reference_labels
    assert store.conn.execute("SELECT count(*) FROM sentences WHERE original_label != current_label").fetchone()[0] == 0
