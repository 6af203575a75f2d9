"""The KVM scenario builder: deterministic, realistic (every feature the detectors must face is present), its
truth consistent with its events, and its files read by `trace-cmd report` exactly."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from tracecmd_oracle import expected, norm, parse, report

from tracekit.testing.kvm_scenario import KALLSYMS, ROUTES, TRUTH_SCHEMA, build_kvm_scenario

SYMBOLS = {name: addr for name, (addr, _) in KALLSYMS.items()}


@pytest.fixture(scope="module")
def busy():
    """All routes, frequent PMIs and decoys: every feature appears."""
    return build_kvm_scenario(7, vcpus=3, duration_s=0.03, pmi_probability=0.2, double_pmi_rate=0.4,
                              ipi_nmi_decoys=0.05, host_nmis=0.05, migrations=0.03, lost_events=4, time_extends=1,
                              exit_interval_us=20)


def test_same_seed_same_scenario():
    a = build_kvm_scenario(3, duration_s=0.01)
    b = build_kvm_scenario(3, duration_s=0.01)
    c = build_kvm_scenario(4, duration_s=0.01)
    assert a.events.keys() == b.events.keys()
    for k in a.events:
        assert_frame_equal(a.events[k], b.events[k])
    assert_frame_equal(a.truth, b.truth)
    assert a.lost == b.lost
    assert not a.truth.equals(c.truth)


def test_truth_schema_and_windows(busy):
    t = busy.truth
    assert t.schema == pl.Schema(TRUTH_SCHEMA)
    done = t.filter(pl.col("entry_ts").is_not_null())
    assert (done["entry_ts"] > done["exit_ts"]).all()
    # windows of one thread never overlap, and every exit has its kvm_exit event
    for _, w in t.group_by("pid"):
        w = w.sort("exit_ts")
        assert (w["exit_ts"].shift(-1).drop_nulls() > w["entry_ts"].head(w.height - 1).fill_null(1 << 62)).all()
    exits = busy.events["kvm:kvm_exit"]
    assert exits.height == t.height
    assert exits.sort("ts")["ts"].to_list() == t.sort("exit_ts")["exit_ts"].to_list()
    entries = busy.events["kvm:kvm_entry"]
    assert set(done["entry_ts"].to_list()) <= set(entries["ts"].to_list())


def test_every_feature_is_present(busy):
    t = busy.truth
    ev = busy.events
    assert t.filter(pl.col("pmi_count") >= 2).height > 0, "double PMIs"
    assert t.filter(pl.col("pmi_count") == 1).height > 0
    assert busy.flagged.height > 0
    assert t.filter(pl.col("entry_ts").is_null()).height > 0, "windows open at trace end"
    assert ev["kvm:kvm_entry"].sort("ts")["ts"][0] < ev["kvm:kvm_exit"]["ts"].min(), "window open at trace start"
    assert busy.inconclusive.height == len(busy.lost) == 4
    assert any(m.count is None for m in busy.lost) and any(m.count for m in busy.lost)
    assert ev["kvm:kvm_apic_ipi"].height > 0, "NMI IPI decoys"
    assert ev["nmi:nmi_handler"].height > 0, "host NMIs"
    assert ev["sched:sched_migrate_task"].height > 0, "migrations"
    assert set(t["exit_reason"]) >= {"EXTERNAL_INTERRUPT", "MSR_WRITE", "EPT_VIOLATION", "HLT", "PREEMPTION_TIMER",
                                     "APIC_WRITE", "MSR_READ", "NMI_WINDOW"}
    gaps = [df.sort("ts")["ts"].diff().max() for _, df in
            pl.concat([f.select("ts", "cpu") for f in ev.values()]).group_by("cpu")]
    assert max(gaps) >= 1 << 27, "a time extend"
    routes = set().union(*map(set, t["sources"].to_list()))
    assert routes == set(ROUTES)
    assert busy.msr_writes.filter(pl.col("pmu")).height > 0 and busy.lvtpc_writes.height > 0
    assert set(busy.lvtpc_writes["masked"]) == {True, False}


def test_exit_stats_add_up(busy):
    st = busy.exit_stats
    done = busy.truth.filter(pl.col("entry_ts").is_not_null())
    assert st["count"].sum() == done.height
    assert st["total_ns"].sum() == (done["entry_ts"] - done["exit_ts"]).sum()
    assert (st["min_ns"] <= st["max_ns"]).all() and (st["min_ns"] > 0).all()


def test_truth_counts_come_from_the_pmi_bookkeeping(busy):
    p = busy.pmis.filter(~pl.col("dropped") & pl.col("window_exit_ts").is_not_null())
    per = p.group_by("pid", "window_exit_ts").agg(pl.col("pmi").n_unique().alias("n"))
    joined = busy.truth.join(per, left_on=["pid", "exit_ts"], right_on=["pid", "window_exit_ts"], how="left")
    assert (joined["pmi_count"] == joined["n"].fill_null(0)).all()


@pytest.mark.parametrize("route", ROUTES)
def test_route_alone_shows_only_its_events(route):
    sc = build_kvm_scenario(11, vcpus=2, duration_s=0.02, routes=(route,), pmi_probability=0.3,
                            nmi_injection="same_window", exit_interval_us=20)
    sources = set().union(*map(set, sc.truth["sources"].to_list()))
    assert sources == {route}
    assert sc.flagged.height > 0
    present = set(sc.events)
    assert ("kprobes:kvm_pmu_deliver_pmi" in present) == (route == "deliver_pmi")
    assert ("ftrace:function" in present) == (route == "function")
    assert ("kprobes:kvm_inj_nmi" in present) == (route == "inj_nmi")


def test_queued_nmis_hide_doubles_from_the_injection_route():
    """KVM injects one NMI per entry: with only the injection traced, a double PMI is not visible."""
    sc = build_kvm_scenario(11, vcpus=2, duration_s=0.02, routes=("inj_nmi",), pmi_probability=0.3,
                            double_pmi_rate=1.0, exit_interval_us=20)
    assert sc.truth["pmi_count"].max() == 1
    assert "NMI_WINDOW" in set(sc.truth["exit_reason"])


def test_svm_variant_names_reasons_like_the_format():
    sc = build_kvm_scenario(2, duration_s=0.01, isa="svm")
    assert set(sc.events["kvm:kvm_exit"]["isa"]) == {2}
    assert {"msr", "npf", "interrupt"} <= set(sc.truth["exit_reason"])


def test_outside_pmis_are_counted():
    sc = build_kvm_scenario(5, vcpus=4, duration_s=0.005, pmi_probability=1.0)
    assert sc.outside_pmis > 0
    outside = sc.pmis.filter(pl.col("window_exit_ts").is_null() & ~pl.col("dropped"))
    assert outside["pmi"].n_unique() == sc.outside_pmis


@pytest.mark.parametrize(("version", "compression"), [(6, "none"), (7, "zstd")])
def test_tracecmd_reads_the_scenario_exactly(tmp_path, busy, version, compression):
    path = tmp_path / "kvm.dat"
    n = busy.write(path, version, compression)
    raw = report(path, "-R", "-t", "-N")
    assert raw.returncode == 0 and raw.stderr.strip() in ("", f"cpus={busy.cpus}"), raw.stderr
    got, drops = parse(raw.stdout, busy.formats, SYMBOLS)
    assert len(got) == n
    assert norm(got, SYMBOLS) == norm(expected(busy.events, busy.formats), SYMBOLS)
    assert sorted(drops, key=str) == sorted([(m.cpu, m.count) for m in busy.lost], key=str)
    plain = report(path)
    assert plain.returncode == 0 and plain.stderr.strip() in ("", f"cpus={busy.cpus}"), plain.stderr
    assert "CPU 0/KVM" in plain.stdout and "kvm_pmu_deliver_pmi" in plain.stdout
