"""The serving contract end to end: what the registry holds, what `mlflow models serve` answers,
and that `sentirefine predict` on a file answers the same.

One tiny workspace (lexicon + LSTM, one iteration, embedded MLflow store) is refined once; the
registered versions are then read back, served by a real ``mlflow models serve`` process on
127.0.0.1 (stopped by its process group), posted to with a real HTTP client, and compared with
the batch command on the same texts.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow_server import free_port

pytestmark = pytest.mark.integration

TEXTS = ["정말 재밌어요 최고의 영화", "최악 지루하다 돈 아깝다", "그냥 그랬어요", "배우 연기가 좋았다"]


@pytest.fixture(scope="module")
def workspace(tiny_corpus, tmp_path_factory) -> dict:
    from tiny_config import TINY_CONFIG

    root = tmp_path_factory.mktemp("serve")
    cfg = {**TINY_CONFIG, "workspace": str(root / "ws"), "versioning": {"enabled": False},
           "models": {**TINY_CONFIG["models"], "order": ["lexicon", "lstm"]}}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    train, gold = tiny_corpus
    for args in (["import", str(train), "--gold", str(gold)], ["refine", "--max-iterations", "1"]):
        proc = subprocess.run([sys.executable, "-m", "sentirefine", "-c", str(config), *args],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    texts = root / "texts.tsv"
    texts.write_text("id\tdocument\n" + "".join(f"r{i}\t{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    return {"root": root, "config": config, "uri": f"sqlite:///{root / 'ws' / 'mlflow.db'}", "texts": texts,
            "registry_warnings": proc.stderr}


def test_registered_models_carry_signature_and_input_example_and_log_no_mlflow_warnings(workspace):
    import mlflow
    from mlflow.models import get_model_info

    mlflow.set_registry_uri(workspace["uri"])
    mlflow.set_tracking_uri(workspace["uri"])
    for name, outputs in (("ensemble", ["label", "probability", "confidence"]),
                          ("lexicon", ["label", "probability"]), ("lstm", ["label", "probability"])):
        info = get_model_info(f"models:/sentirefine-{name}@staging")
        assert info.signature.inputs.input_names() == ["text"], name
        assert info.signature.outputs.input_names() == outputs, name
        assert info.saved_input_example_info["type"] == "dataframe", name
        flavor = info.flavors["python_function"]
        assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model", name  # models from code, not a pickle
    # None of the warnings a user cannot act on (pickled python_model, no signature, no input example).
    text = workspace["registry_warnings"]
    for warning in ("CloudPickle", "Failed to infer model signature", "input example was not provided"):
        assert warning not in text


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def served(workspace):
    port = free_port()
    log = open(workspace["root"] / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
         "models:/sentirefine-ensemble@production", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
         "-w", "1"],
        cwd=workspace["root"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # The scoring server runs `uvicorn` by name: the environment's bin directory must be on PATH.
        env={**os.environ, "MLFLOW_TRACKING_URI": workspace["uri"], "MLFLOW_DISABLE_TELEMETRY": "true",
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow models serve did not start: {(workspace['root'] / 'serve.log').read_text()[-3000:]}")
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _batch(workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentirefine", "-c", str(workspace["config"]), "predict", *args],
                          capture_output=True, text=True, timeout=300)


def test_served_model_answers_both_payload_formats_like_the_batch_command(workspace, served):
    split = _post(f"{served}/invocations", {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}})
    records = _post(f"{served}/invocations", {"inputs": [{"text": t} for t in TEXTS]})
    assert split[0] == 200 and records[0] == 200, (split, records)
    assert split[1]["predictions"] == records[1]["predictions"]
    answers = split[1]["predictions"]
    assert [set(a) for a in answers] == [{"label", "probability", "confidence"}] * len(TEXTS)

    out = workspace["root"] / "scores.csv"
    proc = _batch(workspace, str(workspace["texts"]), "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(len(TEXTS))]
    assert [int(r["line"]) for r in rows] == list(range(2, 2 + len(TEXTS)))
    for row, answer in zip(rows, answers, strict=True):
        assert int(row["label"]) == answer["label"]
        assert float(row["probability"]) == pytest.approx(answer["probability"], abs=1e-9)
        assert float(row["confidence"]) == pytest.approx(answer["confidence"], abs=1e-9)


def test_a_request_without_a_text_column_gets_the_schema_error(served):
    status, body = _post(f"{served}/invocations", {"dataframe_split": {"columns": ["review"], "data": [["좋다"]]}})
    assert status == 400
    assert body.get("error_class") == "SCHEMA_ENFORCEMENT_FAILED", body
    assert "Model is missing inputs ['text']" in body["message"], body


def test_predict_streams_every_row_or_names_its_reject(workspace, tmp_path):
    """Chunking changes nothing; bad rows are rejected with their line, like import; nothing else is dropped."""
    import gzip

    bad = tmp_path / "mixed.csv"
    bad.write_text('text,label\n좋아요,1\n"여러 줄에\n걸친, 리뷰",0\n,1\n=SUM(A1),0\n너무\x00나빠,0\n끝까지 봤다,1\n',
                   encoding="utf-8")
    out = tmp_path / "mixed.jsonl"
    proc = _batch(workspace, str(bad), "-o", str(out), "--chunk-rows", "1")
    assert proc.returncode == 3, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == [2, 3, 6, 8]  # the quoted record spans lines 3-4
    rejects = (tmp_path / "mixed.jsonl.rejects.tsv").read_text(encoding="utf-8").splitlines()
    assert [r.split("\t")[:2] for r in rejects] == [["5", "empty text"], ["7", "NUL byte"]]
    assert "read 6, predicted 4, rejected 2" in proc.stdout
    # the same rows in one chunk, through stdin as gzip: the same answers
    whole = subprocess.run([sys.executable, "-m", "sentirefine", "-c", str(workspace["config"]), "predict", "-",
                            "--format", "jsonl"], input=gzip.compress(bad.read_bytes()), capture_output=True,
                           timeout=300)
    assert whole.returncode == 3
    streamed = [json.loads(line) for line in whole.stdout.decode().splitlines()]
    assert [r["line"] for r in streamed] == [2, 3, 6, 8]
    assert [r["label"] for r in streamed] == [r["label"] for r in rows]
    # float32 equality, not bit equality: one row alone and four padded together round differently
    # (1.4e-8 apart on an AMD EPYC, bit-equal on the Intel machine before it)
    assert [r["probability"] for r in streamed] == pytest.approx([r["probability"] for r in rows], abs=1e-6)


def test_predict_strict_stops_at_the_first_bad_row_and_keeps_the_old_output(workspace, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tdocument\n1\t좋다\n2\t\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    out.write_text("old\n", encoding="utf-8")
    proc = _batch(workspace, str(bad), "-o", str(out), "--strict")
    assert proc.returncode == 3 and f"{bad}:3: empty text" in proc.stderr and "Traceback" not in proc.stderr
    assert out.read_text(encoding="utf-8") == "old\n"
    missing = _batch(workspace, str(bad), "--model-uri", "models:/no-such-model@production")
    assert missing.returncode == 5 and "cannot load model models:/no-such-model@production" in missing.stderr
    assert "hint:" in missing.stderr and "Traceback" not in missing.stderr


def test_the_serving_bench_compares_predict_with_the_model_predict_loads(workspace, tmp_path):
    """bench serving's agreement check reads the registry and model from the config, as `predict` does."""
    from bench import serving

    out = tmp_path / "scores.csv"
    assert _batch(workspace, str(workspace["texts"]), "-o", str(out)).returncode == 0
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    result = serving.agreement(workspace["config"], out, {line: t for line, t in enumerate(TEXTS, start=2)})
    assert result["rows"] == result["same_label"] == len(TEXTS)
    assert result["max_abs_probability_diff"] < 1e-6
    assert {k: os.environ.get(k) for k in before} == before  # nothing exported to the commands after it
