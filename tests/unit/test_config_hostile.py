"""Hostile configuration, through the real command line: every bad value, variable or file is a clear error.

The promise ("nothing lost, nothing bent"): a setting that cannot mean what the user wrote is a
ConfigError (exit 2) naming the YAML key and its line, or the environment variable, with a hint;
never a traceback, never silently ignored. Also the files a config points at (seed lexicon,
LLM prompt) and the --inject-noise share.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from store_checks import assert_clear_error
from typer.testing import CliRunner

from sentirefine.cli import app
from sentirefine.config import NON_CONFIG_ENV, LexiconConfig, _is_config_variable, _resolve
from sentirefine.errors import ConfigError

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def show(*args: str, env: dict[str, str] | None = None):
    """`sentirefine [args] config show` in-process; ``env`` added to (not replacing) the environment."""
    return runner.invoke(app, [*args, "config", "show"], env=env)


def write_yaml(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- models.order -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("order", "expected"), [
    ("[]", "names no member"),
    ("[lexicon, lstm, lexicon]", "lists lexicon more than once"),
])
def test_empty_or_repeated_member_order_is_refused_with_key_and_line(tmp_path, order, expected):
    path = write_yaml(tmp_path, f"refine:\n  max_iterations: 2\nmodels:\n  order: {order}\n")
    assert_clear_error(show("-c", str(path)), 2, str(path), "models.order (line 4)", expected)


# -- environment values -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["lexicon", "lexicon,lstm", " lexicon , lstm ", '["lexicon","lstm"]'])
def test_list_fields_parse_from_the_environment(value):
    result = show(env={"SENTIREFINE_MODELS__ORDER": value})
    assert result.exit_code == 0, result.output
    expected = ["lexicon"] if value == "lexicon" else ["lexicon", "lstm"]
    assert yaml.safe_load(result.output)["models"]["order"] == expected


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("SENTIREFINE_MODELS__ORDER", "lexicon,lexicon", "more than once"),
    ("SENTIREFINE_MODELS__ORDER", "", "names no member"),
    ("SENTIREFINE_MODELS__ORDER", '["lexicon"', "not valid JSON"),
    ("SENTIREFINE_MODELS__ORDER", "lexicon,gpt", "models.order"),
    ("SENTIREFINE_REFINE", "{bad", "not valid JSON"),
    ("SENTIREFINE_REFINE", "[1]", "JSON object"),
    ("SENTIREFINE_REFINE__THRESHOLD__PER_CLASS", "0:0.1", "not valid JSON"),
    ("SENTIREFINE_REFINE__MAX_ITERATIONS", "many", "refine.max_iterations"),
    ("SENTIREFINE_REFINE__THRESHOLD__START", "0.99", "not monotonic"),
])
def test_bad_environment_value_names_the_variable_not_the_yaml_file(tmp_path, name, value, expected):
    path = write_yaml(tmp_path, "refine:\n  max_iterations: 2\n")
    result = show("-c", str(path), env={name: value})
    assert_clear_error(result, 2, name, expected)
    assert str(path) not in result.output  # the file is fine: do not send the user looking there


@pytest.mark.parametrize(("name", "expected"), [
    ("SENTIREFINE_REFINE__MAX_ITERATONS", "did you mean 'max_iterations'"),
    ("SENTIREFINE_REFIN__MAX_ITERATIONS", "did you mean 'refine'"),
    ("SENTIREFINE_BOGUS", "no key 'bogus'"),
    ("SENTIREFINE_REFINE__MAX_ITERATIONS__DEEPER", "is a value, not a section"),
])
def test_unknown_sentirefine_variable_is_an_error(name, expected):
    assert_clear_error(show(env={name: "3"}), 2, "unknown environment variable", name, expected)


def test_variables_that_are_not_settings_are_allowed(tmp_path):
    env = {name: "x" for name in NON_CONFIG_ENV}
    env |= {"SENTIREFINE_CONFIG": "", "SENTIREFINE_PAUSE_AT": "never-passed",
            "SENTIREFINE_FAULT_TRACE": str(tmp_path / "trace"), "SENTIREFINE_GEMINI_API_KEY": "k"}
    result = show(env=env)
    assert result.exit_code == 0, result.output


def test_every_sentirefine_variable_the_repository_uses_is_a_setting_or_allow_listed():
    """A new non-config variable (a fault hook, a deploy knob) must be added to NON_CONFIG_ENV, or every
    command run with it set would now fail as a typo."""
    names: set[str] = set()
    for pattern in ("sentirefine/**/*.py", "tests/**/*.py", "bench/**/*.py", "deploy/**/*", "Dockerfile",
                    "compose.yaml", "Makefile", "README.md", "docs/*.md"):
        for path in REPO.glob(pattern):
            if path.is_file() and "hostile" not in path.name:
                names |= set(re.findall(r"SENTIREFINE_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="replace")))
    assert "SENTIREFINE_KILL_AT" in names  # the scan saw the fault hooks
    for name in sorted(names):
        if _is_config_variable(name):
            assert _resolve(tuple(name.removeprefix("SENTIREFINE_").lower().split("__")))[1] is None, name


def test_command_line_workspace_beats_the_environment(tmp_path):
    result = show("--workspace", str(tmp_path / "flag"), env={"SENTIREFINE_WORKSPACE": str(tmp_path / "env")})
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["workspace"] == str(tmp_path / "flag")


# -- the YAML file itself ---------------------------------------------------------------------------------

def test_duplicate_yaml_key_names_the_key_and_both_lines(tmp_path):
    path = write_yaml(tmp_path, "refine:\n  max_iterations: 3\n  threshold:\n    start: 0.8\n  max_iterations: 4\n")
    assert_clear_error(show("-c", str(path)), 2, str(path), "refine.max_iterations is given twice",
                       "line 2 and line 5")


def test_yaml_merge_keys_and_top_level_duplicates(tmp_path):
    ok = write_yaml(tmp_path, "base: &b {max_iterations: 2}\n", "anchor.yaml")
    assert_clear_error(show("-c", str(ok)), 2, "base (line 1)")  # an unknown top-level key, with its line
    merged = write_yaml(tmp_path, "refine:\n  <<: {max_iterations: 2}\n  max_iterations: 3\n", "merge.yaml")
    result = show("-c", str(merged))  # a merge key overridden on purpose is not a duplicate
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["refine"]["max_iterations"] == 3
    twice = write_yaml(tmp_path, "logging: {}\nlogging: {level: DEBUG}\n", "twice.yaml")
    assert_clear_error(show("-c", str(twice)), 2, "logging is given twice", "line 1 and line 2")


def test_cp949_config_is_named_with_an_iconv_hint(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("# 설정 파일 (한국어 주석)\nrefine:\n  max_iterations: 2\n".encode("cp949"))
    assert_clear_error(show("-c", str(path)), 2, str(path), "looks like cp949", "iconv -f cp949")


def test_config_with_a_bom_reads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfrefine:\n  max_iterations: 2\n")
    result = show("-c", str(path))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["refine"]["max_iterations"] == 2


def test_config_named_by_environment_that_is_missing_says_so(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_clear_error(show(env={"SENTIREFINE_CONFIG": str(missing)}), 2, str(missing), "SENTIREFINE_CONFIG")
    assert_clear_error(show("-c", str(tmp_path)), 2, str(tmp_path), "directory")


# -- files the config points at ---------------------------------------------------------------------------

def test_seed_lexicon_with_bom_keeps_its_first_word(tmp_path):
    from sentirefine.models.lexicon import read_seeds

    seeds = tmp_path / "seeds.tsv"
    seeds.write_bytes(b"\xef\xbb\xbfsplendiferous\t2\nawful\t-2\n")
    assert read_seeds(seeds) == [("splendiferous", 2.0), ("awful", -2.0)]


def test_cp949_seed_lexicon_is_named(tmp_path):
    from sentirefine.errors import ModelLoadError
    from sentirefine.models.lexicon import LexiconModel

    seeds = tmp_path / "seeds.tsv"
    seeds.write_bytes("최고\t2\n최악\t-2\n".encode("cp949"))
    model = LexiconModel("lexicon", LexiconConfig(tokenizer="regex", seed_path=seeds))
    with pytest.raises(ModelLoadError, match="looks like cp949") as info:
        model.fit(["good film", "bad film"], np.array([1, 0]))
    assert str(seeds) in info.value.message and "models.lexicon.seed_path" in info.value.hint


def test_prompt_file_is_read_as_a_user_file(tmp_path):
    from sentirefine.integrations.llm.prompts import relabel_prompt

    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfLabel each review.")
    assert relabel_prompt("v1", bom).system == "Label each review."
    korean = tmp_path / "ko.txt"
    korean.write_bytes("각 리뷰에 레이블을 붙이세요".encode("cp949"))
    cases = ((korean, "looks like cp949"), (tmp_path / "missing.txt", "not found"), (tmp_path, "directory"))
    for path, expected in cases:
        with pytest.raises(ConfigError, match=expected) as info:
            relabel_prompt("v1", path)
        assert str(path) in info.value.message and "llm.prompt_path" in info.value.hint
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        relabel_prompt("v1", empty)


# -- import --inject-noise --------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", ["1.5", "1", "-0.2", "nan", "inf"])
def test_noise_share_outside_zero_one_is_refused_before_anything_is_written(tmp_path, rate):
    data = tmp_path / "train.tsv"
    data.write_text("id\tdocument\tlabel\na\tgood\t1\nb\tbad\t0\n", encoding="utf-8")
    workspace = tmp_path / "ws"
    result = runner.invoke(app, ["--workspace", str(workspace), "import", str(data), "--inject-noise", rate])
    assert_clear_error(result, 2, "--inject-noise", "outside [0, 1)")
    assert not workspace.exists()


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.999])
def test_noise_shares_in_range_pass_the_check(rate):
    from sentirefine.cli import _check_share

    _check_share("--inject-noise", rate)
