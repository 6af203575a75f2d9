"""Rules configuration: TOML rules files merged over detector defaults; every mistake is a ConfigError."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from analysis_fixtures import FAKE_RULES  # noqa: E402

from tracekit.config import Config, config_from_dict, load_config  # noqa: E402
from tracekit.errors import ConfigError  # noqa: E402

DETECTORS = {r.name: r for r in FAKE_RULES}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rules.toml"
    p.write_text(text)
    return p


def test_merge_over_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "[rules.multi-pmi-per-exit]\nmin_pmis = 3\n[rules.mutex-hotspots]\n"
                                      "enabled = false\nthreshold = 1\n"), detectors=DETECTORS)
    assert cfg.for_rule("multi-pmi-per-exit", {"min_pmis": 2, "other": "x"}) == {"min_pmis": 3, "other": "x"}
    assert not cfg.enabled("mutex-hotspots") and cfg.enabled("multi-pmi-per-exit") and cfg.enabled("exit-stats")
    hot = cfg.for_rule("mutex-hotspots", {"threshold": 0.2})
    assert hot == {"threshold": 1.0} and isinstance(hot["threshold"], float)  # int widened to the default's float


def test_config_is_frozen():
    cfg = config_from_dict({"multi-pmi-per-exit": {"min_pmis": 4}}, detectors=DETECTORS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.source = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.rules["multi-pmi-per-exit"].options["min_pmis"] = 5  # type: ignore[index]
    assert cfg.for_rule("multi-pmi-per-exit", {"min_pmis": 2}) == {"min_pmis": 4}


def test_merged_prefers_the_second():
    a = config_from_dict({"multi-pmi-per-exit": {"min_pmis": 4}}, detectors=DETECTORS)
    b = config_from_dict({"multi-pmi-per-exit": {"enabled": False}}, detectors=DETECTORS)
    m = a.merged(b)
    assert not m.enabled("multi-pmi-per-exit") and m.for_rule("multi-pmi-per-exit") == {"min_pmis": 4}
    assert Config().for_rule("x", {"k": 1}) == {"k": 1}


@pytest.mark.parametrize("text, words", [
    ("[rules.nope]\n", "unknown rule 'nope'"),
    ("[rules.multi-pmi-per-exit]\nmin_pmi = 3\n", "unknown option 'min_pmi'"),
    ("[rules.multi-pmi-per-exit]\nmin_pmis = 'two'\n", "rules.multi-pmi-per-exit.min_pmis: expected a number"),
    ("[rules.multi-pmi-per-exit]\nenabled = 1\n", "expected true or false"),
    ("[rules]\nmulti-pmi-per-exit = 3\n", "expected a table"),
    ("[rule.multi-pmi-per-exit]\n", "unknown rule 'rule'"),
    ("rules = 1\n", "expected [rules.<name>] tables"),
    ("[rules.multi-pmi-per-exit\n", "expected TOML"),
    ("[rules]\n[other]\n", "unknown top-level key(s) other"),
])
def test_bad_rules_files(tmp_path, text, words):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p, detectors=DETECTORS)
    assert words in str(exc.value)
    assert str(p) in str(exc.value)


def test_unreadable_and_binary(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", detectors=DETECTORS)
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(p, detectors=DETECTORS)


def test_real_registry_defaults_are_accepted():
    """Every real rule's defaults, written back as a rules file, load cleanly (types match themselves)."""
    from tracekit.detectors import registry

    reg = registry()
    data = {name: {k: v for k, v in (getattr(cls, "defaults", {}) or {}).items() if v is not None}
            for name, cls in reg.items()}
    cfg = config_from_dict(data)
    for name, cls in reg.items():
        assert cfg.for_rule(name, cls.defaults).keys() == dict(cls.defaults).keys()
