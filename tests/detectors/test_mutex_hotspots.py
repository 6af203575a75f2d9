"""mutex-hotspots on generated inputs: periodic bursts of perf samples (the period must come back within 5%), exact
shares and paths, suffix matching, contention begin/end pairing, findings, charts-independent frames."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tracekit.detectors import Inputs, registry
from tracekit.detectors.mutex_hotspots import HOTSPOTS_SCHEMA, MutexHotspots, contention_waits, symbol_pattern
from tracekit.model import Trace
from tracekit.symbols import Kallsyms

# leaf first, as perf script prints them
KVM_LOCK = ["mutex_spin_on_owner", "__mutex_lock.constprop.0", "perf_event_ctx_lock_nested.isra.0",
            "perf_event_period", "pmc_reprogram_counter", "reprogram_counter", "kvm_pmu_handle_event",
            "vcpu_enter_guest", "kvm_arch_vcpu_ioctl_run", "kvm_vcpu_ioctl", "__x64_sys_ioctl", "do_syscall_64"]
KVM_LOCK_SELF = KVM_LOCK[2:]
KVM_UNLOCK = ["__mutex_unlock_slowpath.constprop.0", "perf_event_ctx_unlock.cold", "perf_event_period",
              "pmc_reprogram_counter", "reprogram_counter", "kvm_pmu_handle_event", "vcpu_enter_guest"]
GUEST = ["vmx_vcpu_run", "vcpu_enter_guest", "kvm_arch_vcpu_ioctl_run", "kvm_vcpu_ioctl", "__x64_sys_ioctl"]
DECOY = ["__mutex_lock.constprop.0", "perf_event_ctx_lock_nestedx", "other_path", "do_syscall_64"]
OTHER_MUTEX = ["__mutex_lock.constprop.0", "mutex_lock", "vfs_read", "ksys_read"]
CHAINS = [KVM_LOCK, KVM_LOCK_SELF, KVM_UNLOCK, GUEST, DECOY, OTHER_MUTEX]
IN_SET = np.array([True, True, True, False, False, False])

PERF_SCHEMA = {"ts": pl.Int64, "cpu": pl.Int32, "pid": pl.Int32, "tid": pl.Int32, "comm": pl.String,
               "period": pl.UInt64, "sym": pl.String, "callchain": pl.List(pl.String)}


def periodic_samples(period_s: float, burst_s: float, duration_s: float = 40.0, seed: int = 1,
                     hz: int = 1000, vcpus: int = 4) -> tuple[pl.DataFrame, np.ndarray]:
    """cpu-clock samples of ``vcpus`` vCPU threads (+1 emulator thread): inside a burst (every ``period_s``,
    lasting ``burst_s``, phase 0.37 s) 60% of a vCPU's samples are in perf_event_ctx_lock*, 3% outside.

    Returns:
        (the perf frame, the chain index of each sample).
    """
    rng = np.random.default_rng(seed)
    step = 1_000_000_000 // hz
    n = int(duration_s * hz)
    threads = vcpus + 1
    ts = (np.tile(np.arange(n, dtype=np.int64) * step, threads)
          + rng.integers(0, step // 2, n * threads) + 5_000_000_000)
    tid = np.repeat(np.arange(threads, dtype=np.int32) + 1000, n)
    t_rel = (ts - ts.min()) / 1e9
    burst = ((t_rel - 0.37) % period_s) < burst_s
    p_lock = np.where(burst, 0.6, 0.03)
    p_lock[tid == 1000 + vcpus] = 0.0
    lock = rng.random(len(ts)) < p_lock
    lock_pick = rng.choice(3, size=len(ts), p=[0.7, 0.2, 0.1])
    other_pick = rng.choice([3, 4, 5], size=len(ts), p=[0.8, 0.1, 0.1])
    idx = np.where(lock, lock_pick, other_pick)
    chains = pl.Series("callchain", CHAINS, dtype=pl.List(pl.String))
    comm = np.where(tid < 1000 + vcpus, np.char.add("CPU ", (tid - 1000).astype(str)), "qemu-system-x86")
    comm = np.char.add(comm, np.where(tid < 1000 + vcpus, "/KVM", ""))
    df = pl.DataFrame({
        "ts": ts, "cpu": (tid % 2).astype(np.int32), "pid": np.full(len(ts), 999, np.int32), "tid": tid,
        "comm": comm, "period": np.full(len(ts), step, np.uint64),
        "callchain": chains.gather(idx),
    }).with_columns(sym=pl.col("callchain").list.first()).select(list(PERF_SCHEMA)).sort("ts")
    order = np.argsort(ts, kind="stable")
    return df, idx[order]


def perf_trace(df: pl.DataFrame) -> Trace:
    return Trace(source="synthetic.perf.data", format="perf.data", frames={"cpu-clock": df}, short_names=False)


def run(*traces: Trace, **cfg) -> object:
    return MutexHotspots().run(Inputs(host=traces), cfg)


@pytest.mark.parametrize(("period_s", "burst_s"), [(4.0, 1.9), (1.5, 0.5), (6.5, 2.0)])
def test_periodic_bursts_recover_the_period_within_5_percent(period_s, burst_s):
    df, _ = periodic_samples(period_s, burst_s, duration_s=max(40.0, 8 * period_s))
    res = run(perf_trace(df))
    per = res.frames["periodicity"].filter(pl.col("source") == "perf").row(0, named=True)
    assert per["period_s"] == pytest.approx(period_s, rel=0.05)
    assert per["confidence"] > 0.5
    assert per["mean_burst_s"] == pytest.approx(burst_s, abs=0.25)
    assert per["text"].startswith(f"bursts every ~{period_s:.1f} s lasting ~")
    hs = res.frames["hotspots"].row(0, named=True)
    assert hs["period_s"] == pytest.approx(period_s, rel=0.05)
    starts = np.array([b["start_s"] for b in hs["bursts"]])
    # the generator puts burst k at 0.37 + k * period
    k = np.round((starts - 0.37) / period_s)
    assert np.abs(starts - (0.37 + k * period_s)).max() <= 0.1 + 1e-9


def test_steady_contention_has_no_period():
    df, _ = periodic_samples(100.0, 100.0, duration_s=6.0)
    res = run(perf_trace(df))
    per = res.frames["periodicity"].row(0, named=True)
    assert per["period_s"] is None
    assert per["bursts"] == 1 and "no regular period" in per["text"]


def test_inclusive_share_and_counts_are_exact():
    df, idx = periodic_samples(4.0, 1.9, duration_s=12.0, seed=7)
    res = run(perf_trace(df))
    hs = res.frames["hotspots"]
    assert dict(hs.schema) == HOTSPOTS_SCHEMA
    from tracekit.analysis import HOTSPOTS_SCHEMA as ANALYSIS_SCHEMA  # what findings.json and the report read

    assert HOTSPOTS_SCHEMA == dict(ANALYSIS_SCHEMA)
    row = hs.row(0, named=True)
    hit = IN_SET[idx]
    assert row["samples"] == int(hit.sum())
    assert row["total_samples"] == df.height
    assert row["share"] == pytest.approx(hit.mean(), abs=1e-12)  # equal periods: share of samples
    th = res.frames["thread_share"].filter(pl.col("source") == "perf")
    tids = df["tid"].to_numpy()
    for t in (1000, 1003):
        got = th.filter(pl.col("tid") == t).row(0, named=True)
        assert got["share"] == pytest.approx(hit[tids == t].mean(), abs=1e-12)
        assert got["comm"] == f"CPU {t - 1000}/KVM"
    # the emulator thread never enters the set: it has a share of 0 and no bucket rows
    assert th.filter(pl.col("tid") == 1004)["share"].item() == 0.0
    assert res.frames["bucket_share"].filter(pl.col("tid") == 1004).is_empty()


def test_paths_suffixes_and_internals():
    df, idx = periodic_samples(4.0, 1.9, duration_s=12.0, seed=3)
    res = run(perf_trace(df))
    tp = res.frames["top_paths"].filter(pl.col("source") == "perf")
    want = {
        "reprogram_counter → perf_event_ctx_lock_nested.isra.0": None,
    }
    paths = dict(zip(tp["path"].to_list(), tp["samples"].to_list(), strict=True))
    assert paths["perf_event_period → perf_event_ctx_lock_nested.isra.0 → __mutex_lock.constprop.0"] == \
        int((idx == 0).sum())
    assert paths["perf_event_period → perf_event_ctx_lock_nested.isra.0"] == int((idx == 1).sum())
    # perf_event_ctx_unlock.cold matches with its suffix; its callee is a mutex internal with another suffix
    assert paths["perf_event_period → perf_event_ctx_unlock.cold → __mutex_unlock_slowpath.constprop.0"] == \
        int((idx == 2).sum())
    assert not any("nestedx" in p or "mutex_lock →" in p for p in paths)
    assert set(tp["entry"].to_list()) == {"perf_event_period"}
    assert tp["share_of_lock"].sum() == pytest.approx(1.0)
    assert want  # the decoy and the bare __mutex_lock (indices 4, 5) are not in the set
    where = dict(res.frames["lock_internals"].select("where", "samples").iter_rows())
    assert where["mutex_spin_on_owner"] == int((idx == 0).sum())
    assert where["perf_event_ctx_lock_nested.isra.0"] == int((idx == 1).sum())


def test_symbol_pattern():
    rx = symbol_pattern(["perf_event_ctx_lock", "perf_event_ctx_lock_nested"])
    s = pl.Series(["perf_event_ctx_lock", "perf_event_ctx_lock_nested.isra.0", "perf_event_ctx_lock.constprop.12",
                   "perf_event_ctx_lock_nested.part.0.cold", "perf_event_ctx_lock_nested.lto_priv.0",
                   "perf_event_ctx_lock_nestedx", "xperf_event_ctx_lock", "perf_event_ctx_lock.isra"])
    assert s.str.contains(rx).to_list() == [True, True, True, True, True, False, False, True]


def test_finding_needs_more_than_one_bucket_above_threshold():
    df, _ = periodic_samples(100.0, 100.0, duration_s=3.0, seed=2)
    res = run(perf_trace(df))
    assert len(res.findings) == 1
    f = res.findings[0]
    assert f.severity == "warning" and "CPU" not in f.title and f.evidence.height == 4
    # a single hot bucket per thread (bucket 0.1 s, a 0.15 s burst every 10 s at most covers 2 buckets) …
    df2, _ = periodic_samples(10.0, 0.05, duration_s=20.0, seed=2)
    quiet = run(perf_trace(df2), bucket_s=0.1, thread_threshold=0.5)
    assert quiet.findings == []
    # … while a threshold below the 3% background is exceeded everywhere
    loud = run(perf_trace(df2), thread_threshold=0.001)
    assert loud.findings and loud.findings[0].count >= 4


def test_not_run_without_sources():
    tr = Trace(source="x", format="trace.dat", frames={"sched:sched_switch": pl.DataFrame({"ts": [1]})})
    res = run(tr)
    assert not res.ran and res.missing and "perf record" in res.record_hint
    assert "mutex-hotspots" in registry()


def test_hex_kernel_frames_resolved_through_a_trace_kallsyms():
    ks = Kallsyms(np.array([0xFFFFFFFF81000000, 0xFFFFFFFF81000100, 0xFFFFFFFF81000200, 0xFFFFFFFF81000300],
                           dtype=np.uint64),
                  np.array(["perf_ioctl", "perf_event_ctx_lock_nested.isra.0", "__mutex_lock.constprop.0", "zz"],
                           dtype=object))
    chain_ip = [0xFFFFFFFF81000210, 0xFFFFFFFF81000146, 0xFFFFFFFF81000030]
    df = pl.DataFrame({"ts": [1_000, 2_000, 3_000], "cpu": [0, 0, 1], "pid": [5, 5, 0], "tid": [5, 5, 0],
                       "comm": ["w", "w", "swapper"], "period": [10, 30, 0],
                       "callchain": [["[unknown]", "[unknown]", "[unknown]"], ["idle", "cpu_startup"], []],
                       "callchain_ip": [chain_ip, [1, 2], []]},
                      schema_overrides={"callchain_ip": pl.List(pl.UInt64), "period": pl.UInt64})
    dat = Trace(source="t.dat", format="trace.dat", frames={"sched:sched_switch": pl.DataFrame({"ts": [1]})},
                kallsyms=ks)
    res = run(dat, perf_trace(df))
    row = res.frames["hotspots"].row(0, named=True)
    assert row["share"] == pytest.approx(0.25)
    assert row["top_paths"][0]["path"] == "perf_ioctl → perf_event_ctx_lock_nested.isra.0 → __mutex_lock.constprop.0"


# -- contention events -----------------------------------------------------------------------------------------------
A = 0xFFFF888100000A08
SPIN, MUTEX = 1, 32
STACK_MUTEX = ["trace_event_raw_event_contention_begin", "__mutex_lock.constprop.0",
               "perf_event_ctx_lock_nested.isra.0", "perf_read", "vfs_read", "ksys_read"]
STACK_WAITLOCK = ["trace_event_raw_event_contention_begin", "__pv_queued_spin_lock_slowpath", "_raw_spin_lock",
                  "__mutex_lock.constprop.0", "perf_event_ctx_lock_nested.isra.0", "perf_ioctl"]
STACK_OTHER = ["trace_event_raw_event_contention_begin", "__pv_queued_spin_lock_slowpath", "_raw_spin_lock",
               "try_to_wake_up", "wake_up_q"]
STACK_END = ["trace_event_raw_event_contention_end", "__mutex_lock.constprop.0"]
_C = {"ts": pl.Int64, "cpu": pl.Int32, "common_pid": pl.Int32, "common_comm": pl.String}


def contention_trace() -> Trace:
    # (ts, cpu, pid, lock, flags) — pid 10: mutex wait 100..200 that goes to sleep, a nested wait_lock spin
    # 110..120; pid 11: an end whose begin predates the trace, then a fast spin wait; pid 12: a begin never ended
    begins = [(100, 0, 10, A, SPIN | MUTEX), (110, 0, 10, A + 8, SPIN), (130, 0, 10, A, MUTEX),
              (400, 1, 11, A, SPIN | MUTEX), (600, 1, 11, 0xFFFF8881FFFF0000, SPIN), (900, 0, 12, A, SPIN | MUTEX)]
    ends = [(120, 0, 10, A + 8), (200, 0, 10, A), (50, 1, 11, A), (430, 1, 11, A), (650, 1, 11, 0xFFFF8881FFFF0000)]
    stacks = [(101, 0, 10, STACK_MUTEX), (111, 0, 10, STACK_WAITLOCK), (121, 0, 10, STACK_END),
              (131, 0, 10, STACK_MUTEX), (401, 1, 11, STACK_MUTEX),
              # pid 11's spin wait at 600 has no stack (lost); the stack at 651 belongs to its end
              (651, 1, 11, STACK_END), (901, 0, 12, STACK_OTHER)]
    comm = {10: "CPU 0/KVM", 11: "CPU 1/KVM", 12: "kworker/0:1"}
    b = pl.DataFrame([(t, c, p, comm[p], a, f) for t, c, p, a, f in begins], orient="row",
                     schema={**_C, "lock_addr": pl.UInt64, "flags": pl.UInt32})
    e = pl.DataFrame([(t, c, p, comm[p], a, 0) for t, c, p, a in ends], orient="row",
                     schema={**_C, "lock_addr": pl.UInt64, "ret": pl.Int32})
    s = pl.DataFrame([(t, c, p, comm[p], st) for t, c, p, st in stacks], orient="row",
                     schema={**_C, "callers": pl.List(pl.String)})
    return Trace(source="c.dat", format="trace.dat",
                 frames={"lock:contention_begin": b, "lock:contention_end": e, "ftrace:kernel_stack": s})


def test_contention_pairs_per_pid_and_lock():
    waits, counts = contention_waits(contention_trace(), symbol_pattern(MutexHotspots.defaults["symbols"]),
                                     symbol_pattern(MutexHotspots.defaults["internals"]))
    assert counts == {"unmatched_begin": 1, "unmatched_end": 1, "no_stack": 1}
    rows = {(r["pid"], r["ts"]): r for r in waits.iter_rows(named=True)}
    assert set(rows) == {(10, 100), (10, 110), (11, 400), (11, 600)}
    m = rows[(10, 100)]
    assert (m["end_ts"], m["wait_ns"], m["kind"], m["slept"], m["in_set"]) == (200, 100, "mutex", True, True)
    assert m["path"] == "perf_read → perf_event_ctx_lock_nested.isra.0 → __mutex_lock.constprop.0"
    wl = rows[(10, 110)]
    assert (wl["wait_ns"], wl["kind"], wl["slept"], wl["in_set"]) == (10, "spinlock", False, True)
    fast = rows[(11, 400)]
    assert (fast["wait_ns"], fast["slept"], fast["comm"]) == (30, False, "CPU 1/KVM")
    lost = rows[(11, 600)]
    assert lost["path"] is None and not lost["in_set"]


def test_contention_rule_frames():
    res = run(contention_trace(), bucket_s=0.000_000_1)  # 100 ns buckets
    bl = res.frames["waits_by_lock"].filter(pl.col("lock_addr") == A).row(0, named=True)
    assert (bl["count"], bl["total_ns"], bl["max_ns"], bl["spin"], bl["sleep"], bl["kind"]) == (2, 130, 100, 1, 1,
                                                                                             "mutex")
    bp = res.frames["waits_by_path"]
    assert bp["count"].sum() == 4
    th = {r["tid"]: r for r in res.frames["thread_share"].iter_rows(named=True)}
    # pid 10's nested waits are one 100 ns interval of wall time, not 110
    assert th[10]["lock"] == 100 and th[11]["lock"] == 30
    assert th[10]["total"] == 900 - 50
    hs = res.frames["hotspots"].row(0, named=True)
    assert hs["samples"] == 3 and hs["total_samples"] == 4


def test_degenerate_inputs_never_raise():
    tr = contention_trace()
    names = ("lock:contention_begin", "lock:contention_end", "ftrace:kernel_stack")
    empty = Trace(source="e", format="trace.dat", frames={k: tr.events(k).clear() for k in names})
    res = run(empty)
    assert not res.ran and res.missing and "hold no event" in res.notes[0]
    bare = Trace(source="b", format="trace.dat", frames={k: tr.events(k) for k in names[:2]})
    res = run(bare)
    assert res.ran and res.frames["waits"].height == 4 and res.frames["hotspots"]["samples"][0] == 0
    assert any("kernel_stack" in n for n in res.notes)
    one = Trace(source="o", format="trace.dat", frames={names[0]: tr.events(names[0]).head(1),
                                                       names[1]: tr.events(names[1]).tail(1)})
    res = run(one)
    assert res.ran and res.frames["waits"].is_empty() and res.frames["hotspots"]["share"][0] == 0.0
    df, idx = periodic_samples(4.0, 1.0, duration_s=1.0)
    assert not run(perf_trace(df.clear())).ran
    no_period = run(perf_trace(df.with_columns(period=pl.lit(None, pl.UInt64))))
    assert no_period.frames["hotspots"]["share"][0] == pytest.approx(IN_SET[idx].mean())
    no_chain = run(perf_trace(df.with_columns(callchain=pl.lit(None, pl.List(pl.String)))))
    assert no_chain.frames["hotspots"]["share"][0] == 0.0


def test_periodicity_bridges_single_dips_and_rejects_noise():
    from tracekit.detectors.periodicity import estimate_period, find_bursts

    rng = np.random.default_rng(4)
    x = np.clip(0.55 + rng.normal(0, 0.08, 300), 0, 1)
    x[[51, 183]] = 0.05  # one-bucket dips inside a steady burst
    b = find_bursts(x, 0.01, 0.2)
    assert b.height == 1 and b["buckets"][0] == 300
    assert find_bursts(x, 0.01, 0.2, bridge=0).height == 3
    per = estimate_period(x, 0.01, find_bursts(x, 0.01, 0.2, bridge=0))
    assert per.period_s is None and per.method == "none"  # gaps 0.5 s / 1.3 s, bursts 0.5-1.3 s: no period


def test_function_tracer_calls_are_counted_per_parent():
    ks = Kallsyms(np.array([0xFFFFFFFF81000000, 0xFFFFFFFF81000100, 0xFFFFFFFF81000200], dtype=np.uint64),
                  np.array(["perf_ioctl", "perf_event_ctx_lock_nested.isra.0", "perf_read"], dtype=object))
    fn = pl.DataFrame({"ts": [10, 20, 30, 40, 50], "cpu": [0] * 5, "common_pid": [7, 7, 8, 7, 8],
                       "common_comm": ["a", "a", "b", "a", "b"],
                       "ip": [0xFFFFFFFF81000100, 0xFFFFFFFF81000100, 0xFFFFFFFF81000100, 0xFFFFFFFF81000000,
                              0xFFFFFFFF81000100],
                       "parent_ip": [0xFFFFFFFF81000010, 0xFFFFFFFF81000010, 0xFFFFFFFF81000230, 0x1, 0]},
                      schema_overrides={"ip": pl.UInt64, "parent_ip": pl.UInt64})
    tr = Trace(source="f.txt", format="ftrace-text", frames={"ftrace:function": fn}, kallsyms=ks)
    res = run(tr)
    assert res.ran
    calls = {(r["pid"], r["path"]): r["calls"] for r in res.frames["function_calls"].iter_rows(named=True)}
    assert calls == {(7, "perf_ioctl → perf_event_ctx_lock_nested.isra.0"): 2,
                     (8, "perf_read → perf_event_ctx_lock_nested.isra.0"): 1,
                     (8, "? → perf_event_ctx_lock_nested.isra.0"): 1}
    row = res.frames["hotspots"].row(0, named=True)
    assert row["share"] is None and row["samples"] == 4 and row["top_paths"][0]["samples"] == 2
    assert res.findings == []


def test_stack_addresses_resolved_through_the_trace_kallsyms():
    from tracekit.detectors.lock_sources import _stack_names

    ks = Kallsyms(np.array([0x1000, 0x2000], dtype=np.uint64), np.array(["a", "b"], dtype=object))
    st = pl.DataFrame({"caller": [[0x1001, 0x2001], [], [0x2002, 0x10]]}, schema={"caller": pl.List(pl.UInt64)})
    tr = Trace(source="x", format="trace.dat", frames={}, kallsyms=ks)
    assert _stack_names(tr, st).to_list() == [["a", "b"], [], ["b"]]
