"""exit-stats, pmu-msr-activity, lvtpc-unmasked-after-pmi and describe(), against generated scenarios (truth known by
construction) and against real non-KVM recordings (the rules must not run, and say what to record)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from kvm_gen import ALL_ROUTES, build
from polars.testing import assert_frame_equal

import tracekit
from tracekit.detectors import Inputs, describe, registry
from tracekit.detectors.catalog import DESCRIBE_SCHEMA
from tracekit.detectors.exit_stats import EXIT_STATS_SCHEMA, ExitStats
from tracekit.detectors.lvtpc import INCIDENT_SCHEMA, LvtpcUnmaskedAfterPmi
from tracekit.detectors.multi_pmi import MultiPmiPerExit
from tracekit.detectors.pmu_msr import MSR_WRITES_SCHEMA, PMU_MSRS, PmuMsrActivity
from tracekit.errors import ConfigError
from tracekit.model import Trace

KVM_RULES = (MultiPmiPerExit, ExitStats, PmuMsrActivity, LvtpcUnmaskedAfterPmi)
DATA = Path(__file__).resolve().parents[1] / "data"


def _names(sc) -> pl.Series:
    got = ExitStats().run(Inputs(host=(sc.trace,)), {}).frames["exit_stats"]["exit_reason"]
    if got.str.contains(r"^\d+$").all():
        return pl.Series("exit_reason", [str(n) for n in sc.reason_numbers])
    return sc.truth["exit_reason"]


@pytest.mark.parametrize("svm", [False, True])
def test_exit_stats_matches_truth(svm):
    sc = build(51, svm=svm, vcpus=3, windows=300)
    res = ExitStats().run(Inputs(host=(sc.trace,)), {})
    got = res.frames["exit_stats"]
    assert got.schema == pl.Schema(EXIT_STATS_SCHEMA)
    truth = sc.truth.with_columns(_names(sc)).filter(pl.col("entry_ts").is_not_null())
    rows = []
    for (pid, vcpu, reason), g in truth.group_by(["pid", "vcpu", "exit_reason"]):
        d = (g["entry_ts"] - g["exit_ts"]).to_numpy()
        n_vcpu = truth.filter(pl.col("pid") == pid).height
        rows.append({"pid": pid, "vcpu": vcpu, "exit_reason": reason, "count": len(d), "total_ns": int(d.sum()),
                     "min_ns": int(d.min()), "max_ns": int(d.max()), "mean_ns": float(d.mean()),
                     "p50_ns": float(np.percentile(d, 50)), "p99_ns": float(np.percentile(d, 99)),
                     "share": len(d) / n_vcpu})
    exp = pl.DataFrame(rows, schema=EXIT_STATS_SCHEMA)
    key = ["pid", "vcpu", "exit_reason"]
    assert_frame_equal(got.sort(key), exp.sort(key))
    assert any("without a following kvm_entry" in n for n in res.notes)
    assert res.findings and res.findings[0].severity == "info"


def test_exit_stats_slow_threshold():
    sc = build(52)
    res = ExitStats().run(Inputs(host=(sc.trace,)), {"slow_exit_us": 0.001})
    assert res.findings[0].count == res.frames["exit_stats"]["count"].sum()
    assert res.findings[0].evidence.height == res.frames["exit_stats"].height
    assert "p99 handling time above" in res.findings[0].summary


def test_pmu_msr_writes_match_truth():
    sc = build(53, vcpus=3, windows=400)
    res = PmuMsrActivity().run(Inputs(host=(sc.trace,)), {})
    got = res.frames["msr_writes"]
    assert got.schema == pl.Schema(MSR_WRITES_SCHEMA)
    assert_frame_equal(got.select("ts", "pid", "vcpu", "msr").sort("ts", "pid"), sc.msr_writes.sort("ts", "pid"))
    assert set(got["msr_name"]) <= set(PMU_MSRS.values())
    rate = res.frames["msr_rate"]
    assert rate["writes"].sum() == got.height
    assert res.findings[0].severity == "info"
    hot = PmuMsrActivity().run(Inputs(host=(sc.trace,)), {"max_writes_per_s": 1})
    assert hot.findings[0].severity == "warning"


def test_pmu_msr_names():
    assert PMU_MSRS[0x186] == "IA32_PERFEVTSEL0" and PMU_MSRS[0x18D] == "IA32_PERFEVTSEL7"
    assert PMU_MSRS[0xC1] == "IA32_PMC0" and PMU_MSRS[0x38F] == "IA32_PERF_GLOBAL_CTRL"
    assert PMU_MSRS[0xC001020B] == "F15H_PERF_CTR5" and PMU_MSRS[0xC0000301] == "AMD64_PERF_CNTR_GLOBAL_CTL"
    assert 0x10 not in PMU_MSRS and 0x1D9 not in PMU_MSRS


@pytest.mark.parametrize("rearm", [True, False])
def test_lvtpc_incidents_match_truth(rearm):
    sc = build(54, routes=ALL_ROUTES, lvtpc_rearm=rearm, vcpus=3)
    res = LvtpcUnmaskedAfterPmi().run(Inputs(host=(sc.trace,)), {})
    inc = res.frames["incidents"]
    assert inc.schema == pl.Schema(INCIDENT_SCHEMA)
    assert inc.filter(pl.col("kind") == "pmi_before_rearm").height == sc.lvtpc_incidents
    assert sc.lvtpc_incidents > 0
    assert (res.findings[0].severity == "error") == (inc.height > 0)


def test_lvtpc_amd_skipped_and_vendor_option():
    sc = build(55, routes=ALL_ROUTES, svm=True, lvtpc_rearm=False)
    res = LvtpcUnmaskedAfterPmi().run(Inputs(host=(sc.trace,)), {})
    assert res.frames["incidents"].is_empty() and not res.findings
    assert any("AMD" in n for n in res.notes)
    forced = LvtpcUnmaskedAfterPmi().run(Inputs(host=(sc.trace,)), {"vendor": "intel"})
    assert forced.frames["incidents"].height > 0
    with pytest.raises(ConfigError):
        LvtpcUnmaskedAfterPmi().run(Inputs(host=(sc.trace,)), {"vendor": "via"})


def test_lvtpc_read_unmasked_after_pmi():
    sc = build(56, routes=("apic_nmi",), vcpus=1, decoys=False, migrations=False)
    pmi_ts = sc.trace.events("kvm_apic_accept_irq")["ts"]
    first = int(pmi_ts[0])
    apic = sc.trace.events("kvm_apic")
    read = pl.DataFrame({"ts": [first + 1], "cpu": [0], "common_pid": [2000], "rw": [0], "reg": [0x340],
                         "val": [4 << 8]}, schema=apic.schema)
    frames = dict(sc.trace.frames)
    frames["kvm:kvm_apic"] = pl.concat([apic, read]).sort("ts")
    t = Trace("read", "trace.dat", frames, formats=sc.trace.formats)
    inc = LvtpcUnmaskedAfterPmi().run(Inputs(host=(t,)), {}).frames["incidents"]
    assert inc.filter(pl.col("kind") == "read_unmasked")["ts"].to_list() == [first + 1]


def _no_kvm_trace() -> Trace:
    df = pl.DataFrame({"ts": [1, 2], "cpu": [0, 1], "common_pid": [5, 6], "prev_pid": [5, 6]},
                      schema={"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "prev_pid": pl.Int32})
    return Trace("sched.dat", "trace.dat", {"sched:sched_switch": df})


@pytest.mark.parametrize("rule", KVM_RULES)
def test_missing_events_say_what_to_record(rule):
    res = rule().run(Inputs(host=(_no_kvm_trace(),)), dict(rule.defaults))
    assert not res.ran and not res.findings
    assert res.missing and res.record_hint.startswith(("trace-cmd record", "echo"))
    assert "trace-cmd record" in res.record_hint
    assert res.rule == rule.name


def test_kvm_exit_without_pmi_events():
    sc = build(57)
    frames = {k: v for k, v in sc.trace.frames.items() if k in ("kvm:kvm_exit", "kvm:kvm_entry")}
    t = Trace("x", "trace.dat", frames, formats=sc.trace.formats)
    res = MultiPmiPerExit().run(Inputs(host=(t,)), {})
    assert not res.ran and "kvm_pmu_deliver_pmi" in res.missing[0]
    assert ExitStats().run(Inputs(host=(t,)), {}).ran


def _real_traces() -> list[Path]:
    """Real recordings under tests/data (synthetic KVM files, which other tests write, left out)."""
    return sorted(p for p in DATA.rglob("*") if p.is_file() and p.suffix in (".dat", ".data")
                  and not any(w in str(p.relative_to(DATA)) for w in ("kvm", "synth")))


@pytest.mark.parametrize("path", _real_traces(), ids=lambda p: str(p.relative_to(DATA)))
def test_real_non_kvm_recordings_give_no_findings(path):
    try:
        trace = tracekit.load(path)
    except tracekit.UnsupportedFormatError as exc:
        pytest.skip(f"no reader for {path.name}: {exc}")
    except tracekit.ParseError as exc:
        pytest.skip(f"{path.name} is a damaged fixture, not a recording: {exc}")
    if trace.has("kvm_exit") or trace.has("kvm_msr"):
        for rule in KVM_RULES:  # a fixture holding every format (made-up values): the rules run and do not crash
            assert rule().run(Inputs(host=(trace,)), dict(rule.defaults)).ran, rule.name
        return
    for rule in KVM_RULES:
        res = rule().run(Inputs(host=(trace,)), dict(rule.defaults))
        assert not res.ran and not res.findings, rule.name
        assert "kvm_exit" in " ".join(res.missing) or "kvm_msr" in " ".join(res.missing)


def test_describe_lists_every_rule():
    d = describe()
    assert d.schema == pl.Schema(DESCRIBE_SCHEMA)
    assert set(d["name"]) == set(registry())
    row = d.filter(pl.col("name") == "multi-pmi-per-exit").row(0, named=True)
    assert "kvm_exit" in row["requires"] and any("|" in r for r in row["requires"])
    assert "kprobe_events" in row["record_hint"] and "min_pmis" in row["defaults"]
