"""The periodic-contention scenario: deterministic, its truth matches its events, and trace-cmd reads it exactly
(stacks deeper or shallower than the format's nominal 8 callers, resolved through the file's kallsyms)."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal
from tracecmd_oracle import expected, norm, parse, report

from tracekit.testing.contention_scenario import CONTENTION_KALLSYMS, CTX_MUTEX, build_contention_scenario

SMALL = {"duration_s": 0.25, "period_s": 0.1, "burst_s": 0.02, "phase_s": 0.01, "threads": 3, "background_hz": 200}


def test_same_seed_same_scenario():
    a = build_contention_scenario(1, **SMALL)
    b = build_contention_scenario(1, **SMALL)
    assert_frame_equal(a.waits, b.waits)
    for k in a.events:
        assert_frame_equal(a.events[k], b.events[k])
    assert not build_contention_scenario(2, **SMALL).waits.equals(a.waits)


def test_truth_matches_events():
    sc = build_contention_scenario(3, **SMALL)
    w, ev = sc.waits, sc.events
    assert ev["lock:contention_end"].height == w.height
    assert ev["lock:contention_begin"].height == w.height + w["slept"].sum()
    assert ev["ftrace:kernel_stack"].height == ev["lock:contention_begin"].height + w.height
    mutex = w.filter(pl.col("lock_addr") == CTX_MUTEX)
    assert mutex["burst"].null_count() == 0 and set(mutex["path"]) == {"perf_ioctl", "perf_read"}
    assert w.filter(pl.col("lock_addr") != CTX_MUTEX)["path"].unique().to_list() == ["__schedule"]
    # every mutex wait lies inside its burst, and the bursts come every period
    b = sc.bursts.with_row_index("burst").with_columns(pl.col("burst").cast(pl.Int32))
    j = mutex.join(b, on="burst")
    assert (j["ts"] >= j["start_ns"]).all() and (j["ts"] < j["end_ns"]).all()
    assert set(sc.bursts["start_ns"].diff().drop_nulls()) == {sc.period_ns}
    # stack records: innermost frame is the tracepoint, then the mutex slow path
    stacks = ev["ftrace:kernel_stack"]["caller"].to_list()
    assert all(s[0] >= CONTENTION_KALLSYMS["trace_event_raw_event_contention_begin"] for s in stacks)
    assert any(len(s) > 8 for s in stacks)


def test_tracecmd_reads_the_scenario_exactly(tmp_path):
    sc = build_contention_scenario(4, **SMALL)
    path = tmp_path / "contention.dat"
    n = sc.write(path, 7, "zstd")
    raw = report(path, "-R", "-t", "-N")
    assert raw.returncode == 0 and raw.stderr.strip() in ("", f"cpus={sc.cpus}"), raw.stderr
    got, drops = parse(raw.stdout, sc.formats, sc.kallsyms)
    assert len(got) == n and not drops
    assert norm(got, sc.kallsyms) == norm(expected(sc.events, sc.formats), sc.kallsyms)
    plain = report(path)
    assert plain.returncode == 0 and plain.stderr.strip() in ("", f"cpus={sc.cpus}"), plain.stderr
    assert "=> perf_event_ctx_lock_nested.isra.0 (" in plain.stdout
    assert "=> __mutex_lock.constprop.0 (" in plain.stdout
    frames = sum(1 for ln in plain.stdout.splitlines() if ln.startswith("=> "))
    assert frames == sc.events["ftrace:kernel_stack"]["size"].sum()
