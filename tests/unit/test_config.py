"""Configuration: defaults, YAML, env overrides, and clear errors for bad values."""

from __future__ import annotations

import pytest

from sentirefine.config import ThresholdSchedule, load_config
from sentirefine.errors import ConfigError


def test_defaults_are_valid_and_documented():
    cfg = load_config()
    assert cfg.models.order == ["lexicon", "lstm", "bilstm", "bert"]
    assert cfg.refine.threshold.at(1) == pytest.approx(0.70)
    sections = [cfg, cfg.store, cfg.models, cfg.models.lexicon, cfg.models.lstm, cfg.models.bert, cfg.ensemble,
                cfg.refine, cfg.refine.threshold, cfg.logging]
    for section in sections:
        for name, field in type(section).model_fields.items():
            assert field.description, f"{type(section).__name__}.{name} has no description"


def test_yaml_then_env_override(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("refine:\n  max_iterations: 7\nstore:\n  chunk_size: 100\n")
    assert load_config(path).refine.max_iterations == 7
    monkeypatch.setenv("SENTIREFINE_REFINE__MAX_ITERATIONS", "9")
    cfg = load_config(path)
    assert cfg.refine.max_iterations == 9 and cfg.store.chunk_size == 100


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("store:\n  chunk_size: -5\n", "chunk_size"),
        ("refine:\n  threshold:\n    start: 1.5\n", "refine.threshold.start"),
        ("refine:\n  threshold:\n    start: 0.9\n    max: 0.8\n", "not monotonic"),
        ("refine:\n  max_iteratons: 3\n", "max_iteratons"),
        ("bogus_section: 1\n", "bogus_section"),
        ("- a list\n", "mapping"),
        ("refine: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_values_name_the_problem(tmp_path, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_threshold_schedule_rises_and_caps():
    sched = ThresholdSchedule(start=0.7, step=0.1, max=0.9, per_class={1: 0.05})
    assert [round(sched.at(i), 2) for i in (1, 2, 3, 4)] == [0.7, 0.8, 0.9, 0.9]
    assert sched.at(1, label=1) == pytest.approx(0.75)


def test_readme_config_reference_is_current():
    """The README's table is generated from the config; regenerate it when a field changes."""
    from pathlib import Path

    from sentirefine.config import reference_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert reference_markdown() in readme, "README config table is stale: paste `sentirefine config docs` into it"
