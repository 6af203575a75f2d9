"""multi-pmi-per-exit against generated scenarios whose ground truth is known by construction (tests/detectors/
kvm_gen.py): every route alone and all together, decoys, migrations, windows at trace start/end, lost events."""

from __future__ import annotations

import dataclasses
import itertools

import polars as pl
import pytest
from kvm_gen import ALL_ROUTES, build
from polars.testing import assert_frame_equal

from tracekit.detectors import Inputs, registry
from tracekit.detectors.multi_pmi import MultiPmiPerExit
from tracekit.detectors.pmi import WINDOW_SCHEMA, analyse_pmis

KEY = ["pid", "exit_ts"]
WINDOWS_TESTED = {"n": 0}


def _named(trace) -> bool:
    """Whether kvm_exit reasons come out named (tracekit.printfmt in place) or as numbers."""
    names = analyse_pmis(trace).windows["exit_reason"]
    return not names.str.contains(r"^\d+$").all()


def _expected(sc) -> pl.DataFrame:
    truth = sc.truth
    if not _named(sc.trace):
        truth = truth.with_columns(pl.Series("exit_reason", [str(n) for n in sc.reason_numbers]))
    return truth.sort(KEY)


def _check(sc, config=None) -> dict:
    res = MultiPmiPerExit().run(Inputs(host=(sc.trace,)), config or {})
    assert res.ran, res.missing
    exp = _expected(sc)
    got = res.frames["windows"]
    assert got.schema == pl.Schema(WINDOW_SCHEMA)
    assert_frame_equal(got.sort(KEY), exp)
    want_flag = exp.filter((pl.col("pmi_count") > 1) & ~pl.col("inconclusive"))
    assert_frame_equal(res.frames["flagged"].sort(KEY), want_flag)
    assert_frame_equal(res.frames["inconclusive"].sort(KEY), exp.filter(pl.col("inconclusive")))
    WINDOWS_TESTED["n"] += exp.height
    return {"res": res, "exp": exp}


@pytest.mark.parametrize("route", ALL_ROUTES)
def test_each_route_alone(route):
    sc = build(11, routes=(route,))
    out = _check(sc)
    assert out["exp"]["pmi_count"].max() >= 2
    assert set(itertools.chain.from_iterable(out["exp"]["sources"].to_list())) == {route}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_all_routes_together_count_once(seed):
    sc = build(seed, routes=ALL_ROUTES, vcpus=4)
    out = _check(sc)
    pmis = out["res"].frames["pmis"]
    # every PMI was seen through several events but counts once
    assert pmis.height > pmis["pmi"].n_unique()
    assert out["res"].frames["per_vcpu"]["exits"].sum() == sc.truth.height


@pytest.mark.parametrize("pair", [("deliver_pmi", "function"), ("apic_nmi", "inj_nmi"), ("deliver_pmi", "inj_nmi"),
                                  ("function", "lvtpc_fixed"), ("apic_nmi", "lvtpc_fixed")])
def test_route_pairs(pair):
    _check(build(5, routes=pair))


def test_svm_vcpus_and_names():
    sc = build(7, routes=ALL_ROUTES, svm=True)
    _check(sc)


def test_decoys_only_give_no_pmi():
    sc = build(8, routes=("apic_nmi",), p_pmi=0.0001, p_multi=0.0)
    res = _check(sc)["res"]
    assert res.frames["decoys"].height > 0
    assert res.frames["flagged"].is_empty()


def test_nmis_sent_to_other_vcpus_never_count_even_without_their_ipi():
    """__apic_accept_irq traces the *target* vCPU's id (the field is named apicid); a PMI goes to the vCPU's own
    LVTPC. With kvm_apic_ipi not recorded (or lost), the NMIs a vCPU thread sends to others must still not count."""
    sc = build(31, routes=("apic_nmi",), p_pmi=0.2)
    frames = {k: v for k, v in sc.trace.frames.items() if not k.endswith("kvm_apic_ipi")}
    sc.trace = dataclasses.replace(sc.trace, frames=frames)
    assert not sc.trace.has("kvm_apic_ipi")
    res = _check(sc)["res"]
    sent = res.frames["decoys"].filter(pl.col("ipi_ts").is_null())
    acc = sc.trace.events("kvm_apic_accept_irq")
    vcpu = sc.trace.events("kvm_entry").group_by("common_pid").agg(pl.col("vcpu_id").first())
    other = (acc.join(vcpu, on="common_pid").filter((pl.col("dm") // 256 == 4) & (pl.col("apicid") != pl.col("vcpu_id"))))
    assert sent.height == other.height > 0


def test_no_migrations_no_decoys():
    _check(build(9, migrations=False, decoys=False))


def test_window_at_trace_start_and_end():
    sc = build(12, routes=("deliver_pmi",), vcpus=2)
    res = _check(sc)["res"]
    win = res.frames["windows"]
    assert win.filter(pl.col("entry_ts").is_null()).height == 2  # one open window per vCPU at trace end
    assert any("outside any VM-exit window" in n for n in res.notes) == (sc.outside > 0)
    pmis = res.frames["pmis"]
    assert pmis.filter(pl.col("window").is_null())["pmi"].n_unique() == sc.outside


@pytest.mark.parametrize(("seed", "where"), [(21, "lost_events"), (22, "lost_events"), (24, "tables")])
def test_lost_events_with_times(seed, where):
    sc = build(seed, lost="timed")
    if where == "tables":  # one row per flagged page in tables["lost_marks"], per-CPU counts in lost_events
        marks = sc.trace.lost_events
        sc.trace.tables["lost_marks"] = marks
        sc.trace.lost_events = marks.group_by("cpu").agg(pl.col("lost").sum(), pl.col("lost_unknown").sum())
    out = _check(sc)
    assert 0 < out["exp"]["inconclusive"].sum() < out["exp"].height


def test_lost_events_without_times_make_whole_cpus_inconclusive():
    sc = build(23, lost="untimed", migrations=False)
    out = _check(sc)
    assert out["exp"]["inconclusive"].sum() > 0
    assert any("without saying when" in n for n in out["res"].notes)


def test_lvtpc_vector_option_and_route_filter():
    sc = build(31, routes=("lvtpc_fixed",))
    _check(sc, {"lvtpc_vector": "0xfe"})
    res = MultiPmiPerExit().run(Inputs(host=(sc.trace,)), {"lvtpc_vector": 0x20})
    assert res.frames["windows"]["pmi_count"].sum() == 0  # wrong vector: nothing is a PMI
    sc2 = build(32, routes=ALL_ROUTES)
    res = MultiPmiPerExit().run(Inputs(host=(sc2.trace,)), {"routes": ["deliver_pmi"]})
    assert set(res.frames["pmis"]["route"].unique()) == {"deliver_pmi"}


def test_findings_and_summary():
    sc = build(41, routes=ALL_ROUTES)
    res = _check(sc)["res"]
    err = [f for f in res.findings if f.severity == "error"]
    assert len(err) == 1 and err[0].count == res.frames["flagged"].height
    assert "Uhhuh. NMI received for unknown reason" in err[0].summary
    assert "vCPU 0" in err[0].summary
    clean = build(42, p_multi=0.0)
    res = MultiPmiPerExit().run(Inputs(host=(clean.trace,)), {})
    assert [f.severity for f in res.findings] == ["info"]
    lossy = build(43, p_multi=0.0, lost="timed")
    res = MultiPmiPerExit().run(Inputs(host=(lossy.trace,)), {})
    assert [f.severity for f in res.findings] == ["warning"]


def test_min_pmis_threshold():
    sc = build(44, routes=ALL_ROUTES)
    res = MultiPmiPerExit().run(Inputs(host=(sc.trace,)), {"min_pmis": 3})
    exp = _expected(sc).filter((pl.col("pmi_count") >= 3) & ~pl.col("inconclusive"))
    assert_frame_equal(res.frames["flagged"].sort(KEY), exp)


def test_registered():
    assert registry()["multi-pmi-per-exit"] is MultiPmiPerExit


def test_zz_report_windows_tested(capsys):
    with capsys.disabled():
        print(f"\n[kvm detectors] windows compared with ground truth in test_kvm_pmi: {WINDOWS_TESTED['n']}")
    assert WINDOWS_TESTED["n"] > 1000
