"""tracekit.analyze / Analysis: rules selection, config, frames with the right schema, JSON, save, notebook HTML."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import polars as pl
import pytest
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent))

from analysis_fixtures import EVIL_COMM, FAKE_RULES, kvm_trace, windows_frame  # noqa: E402

import tracekit  # noqa: E402
from tracekit.analysis import EXIT_STATS_SCHEMA, HOTSPOTS_SCHEMA, MULTI_PMI_SCHEMA, schema  # noqa: E402
from tracekit.errors import ConfigError, ParseError  # noqa: E402


@pytest.fixture(scope="module")
def result():
    return tracekit.analyze(kvm_trace(), rules=FAKE_RULES)


def test_findings_ordered_by_severity(result):
    f = result.findings
    assert f.columns == ["rule", "severity", "title", "summary", "count"]
    assert f["severity"].to_list() == ["error", "info"]
    assert f["rule"].to_list() == ["multi-pmi-per-exit", "exit-stats"]
    assert result.max_severity() == "error"


def test_frames(result):
    expect = windows_frame().filter(pl.col("pmi_count") > 1)
    assert result.multi_pmi_exits.equals(expect)
    assert result.exit_stats.schema == pl.Schema(EXIT_STATS_SCHEMA)
    assert result.exit_stats["count"].sum() == 8
    # the hotspot rule could not run: an empty frame with the documented schema
    assert result.hotspots.is_empty() and result.hotspots.schema == pl.Schema(HOTSPOTS_SCHEMA)
    missing = result.results["mutex-hotspots"]
    assert not missing.ran and missing.record_hint.startswith("trace-cmd record")


def test_window_events_are_the_thread_between_exit_and_entry(result):
    ev = result.window_events
    assert ev["event"].to_list() == ["kvm_exit", "kvm_apic_accept_irq", "kvm_apic_accept_irq",
                                     "kvm_apic_accept_irq", "kvm_entry"]
    assert ev["ts"].to_list() == [5_000, 5_100, 5_300, 5_600, 7_000]
    assert set(ev["pid"]) == {100} and ev["rel_us"][0] == 0.0


def test_only_and_disabled(tmp_path):
    a = tracekit.analyze(kvm_trace(), rules=FAKE_RULES, only="exit-stats")
    assert list(a.results) == ["exit-stats"]
    assert a.multi_pmi_exits.is_empty() and a.multi_pmi_exits.schema == pl.Schema(MULTI_PMI_SCHEMA)
    b = tracekit.analyze(kvm_trace(), rules=FAKE_RULES, config={"multi-pmi-per-exit": {"enabled": False}})
    assert not b.results["multi-pmi-per-exit"].ran and "disabled" in b.results["multi-pmi-per-exit"].notes[0]
    c = tracekit.analyze(kvm_trace(), rules=FAKE_RULES, config={"multi-pmi-per-exit": {"min_pmis": 1}})
    assert c.multi_pmi_exits.height == 2  # the threshold reached the rule
    rules = tmp_path / "r.toml"
    rules.write_text("[rules.multi-pmi-per-exit]\nmin_pmis = 4\n")
    d = tracekit.analyze(kvm_trace(), rules=FAKE_RULES, config=rules)
    assert d.multi_pmi_exits.is_empty() and d.findings["rule"].to_list() == ["exit-stats"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="unknown rule"):
        tracekit.analyze(kvm_trace(), rules=FAKE_RULES, only="nope")
    with pytest.raises(ConfigError, match="no input"):
        tracekit.analyze([], rules=FAKE_RULES)
    with pytest.raises(ConfigError):
        tracekit.analyze(42, rules=FAKE_RULES)
    with pytest.raises(ParseError):
        tracekit.analyze(tmp_path / "missing.dat", rules=FAKE_RULES)


def test_json_validates_and_round_trips(result):
    doc = json.loads(result.to_json())
    jsonschema.validate(doc, schema())
    assert doc["schema_version"] == "1.0" and doc["tracekit_version"] == tracekit.__version__
    assert doc["inputs"][0] == {"path": "hand-made.dat", "side": "host", "format": "trace.dat", "version": "7",
                                "events": 20, "lost_events": 0, "damage": []}
    assert doc["multi_pmi_exits"] == [{"pid": 100, "vcpu": 0, "cpu": 0, "exit_ts": 5000, "entry_ts": 7000,
                                       "exit_reason": "MSR_WRITE", "pmi_count": 3, "sources": ["apic_nmi"]}]
    assert doc["findings"][0]["evidence"][0]["pmi_count"] == 3
    assert {r["rule"]: r["ran"] for r in doc["rules"]} == {"exit-stats": True, "multi-pmi-per-exit": True,
                                                           "mutex-hotspots": False}


def test_figures_and_save(result, tmp_path):
    figs = result.figures
    assert {"pmi_histogram", "flagged_timeline", "exit_reasons", "handling_times"} <= set(figs)
    assert all(isinstance(f, Figure) for f in figs.values())
    written = result.save(tmp_path / "out")
    assert written["html"].read_text().startswith("<!DOCTYPE html>")
    for name in figs:
        assert written[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    only_json = result.save(tmp_path / "json", json_only=True)
    assert set(only_json) == {"json"} and sorted(p.name for p in (tmp_path / "json").iterdir()) == ["findings.json"]


def test_save_to_unwritable_place(result, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write"):
        result.save(blocker / "sub")


def test_repr_html_escapes():
    a = tracekit.analyze(kvm_trace(EVIL_COMM), rules=FAKE_RULES)
    html = a._repr_html_()
    assert "multi-pmi-per-exit" in html and 'id="flagged-exits"' in html
    assert "<script" not in html
    assert repr(a).startswith("<Analysis 1 input(s), 2/3 rules ran")


def test_rule_tracekit_error_becomes_not_run():
    class Boom:
        name = "boom"
        defaults: dict = {}
        record_hint = "record more"

        def run(self, inputs, config):
            raise tracekit.MissingEventError("kvm_exit", ["kvm_entry"])

    a = tracekit.analyze(kvm_trace(), rules=[Boom])
    r = a.results["boom"]
    assert not r.ran and r.missing == ["kvm_exit"] and r.record_hint == "record more"
    assert "could not run" in r.notes[0]


def test_real_rules_on_a_trace_without_their_events():
    """Every registered rule either runs or says what is missing, on a trace with only sched-like events."""
    df = pl.DataFrame({"ts": [1, 2], "cpu": [0, 0], "common_pid": [1, 2], "common_comm": ["a", "b"]},
                      schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "common_comm": pl.String})
    tr = tracekit.Trace(source="x.dat", format="trace.dat", frames={"sched:sched_switch": df})
    a = tracekit.analyze(tr)
    assert a.results, "rules are registered"
    for name, r in a.results.items():
        assert r.ran or r.missing or r.notes, name
    assert a.findings.filter(pl.col("severity") != "info").is_empty()
    jsonschema.validate(a.to_dict(), schema())
