"""mutex-hotspots on the real host-contention recording, read through tracekit's own readers.

Fixtures and goldens come from ``tests/golden/regen_hotspots.sh``: an 80 ms ``trace-cmd split`` of the contention
trace.dat, the perf.data of the same run, ``perf report --children`` of that perf.data (kernel symbols from the
trace's kallsyms), every contention begin/end pair of ``trace-cmd report -t`` of the cut, and ``perf lock contention
-v`` of a separate run of the same workload.
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import polars as pl
import pytest
import zstandard
from polars.testing import assert_frame_equal

import tracekit
from tracekit.detectors import Inputs
from tracekit.detectors.mutex_hotspots import MutexHotspots, contention_waits, symbol_pattern

TESTS = Path(__file__).resolve().parents[1]
CUT = TESTS / "data" / "hotspots" / "contention_cut.dat"
PERF = TESTS / "data" / "perf" / "host-contention.perf.data"
GOLDEN = TESTS / "golden" / "hotspots"
SET_RE = symbol_pattern(MutexHotspots.defaults["symbols"])
INT_RE = symbol_pattern(MutexHotspots.defaults["internals"])
IOCTL = "perf_ioctl → perf_event_ctx_lock_nested.isra.0 → __mutex_lock.constprop.0"
READ = "perf_read → perf_event_ctx_lock_nested.isra.0 → __mutex_lock.constprop.0"


def _zst_text(path: Path) -> str:
    return zstandard.ZstdDecompressor().stream_reader(path.read_bytes()).read().decode()


def _load(path: Path, what: str):
    try:
        return tracekit.load(path)
    except (tracekit.UnsupportedFormatError, AttributeError, NotImplementedError, ImportError) as exc:
        pytest.skip(f"{what} reader not available yet: {exc}")


@pytest.fixture(scope="module")
def cut():
    return _load(CUT, "trace.dat")


@pytest.fixture(scope="module")
def perf():
    return _load(PERF, "perf.data")


@pytest.fixture(scope="module")
def both(cut, perf):
    return MutexHotspots().run(Inputs(host=(cut, perf)), {})


def _children_percent(report: str, pattern: str) -> float:
    """The Children column of the line of the first symbol matching ``pattern`` in ``perf report --children``."""
    for line in report.splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+[\d.]+%\s+\[k\]\s+(\S+)\s*$", line)
        if m and re.match(pattern, m.group(2)):
            return float(m.group(1))
    raise AssertionError(f"no symbol matching {pattern} in perf report")


def test_inclusive_share_equals_perf_report_children(both):
    report = _zst_text(GOLDEN / "perf_report_children.txt.zst")
    want = _children_percent(report, SET_RE)  # 47.07 for this recording
    row = both.frames["hotspots"].row(0, named=True)
    assert row["share"] * 100 == pytest.approx(want, abs=0.2)
    total = int(re.search(r"# Samples: (\d+)K? of event 'cpu-clock'", report).group(1))
    assert round(row["total_samples"] / 1000) == total  # perf prints "24K"
    paths = {p["path"]: p for p in row["top_paths"]}
    assert set(list(paths)[:2]) == {IOCTL, READ}
    assert {t["comm"] for t in row["by_thread"]} == {"perf_ctx_conten"} and len(row["by_thread"]) == 6


def test_perf_report_run_live_agrees(both, cut, tmp_path):
    """When perf is installed, run ``perf report`` now with the cut's kallsyms (this host's kernel differs)."""
    try:
        ks = subprocess.run(["trace-cmd", "dump", "--kallsyms", "-i", str(CUT)], capture_output=True, text=True,
                            timeout=120).stdout
        kfile = tmp_path / "kallsyms"
        kfile.write_text("".join(ln + "\n" for ln in ks.splitlines() if re.match(r"^[0-9a-f]{8,16} ", ln)))
        out = subprocess.run(["perf", "report", "--children", "--stdio", f"--kallsyms={kfile}", "-i", str(PERF),
                              "--sort", "sym", "-g", "none"], capture_output=True, text=True, timeout=300).stdout
    except FileNotFoundError as exc:
        pytest.skip(f"perf or trace-cmd not installed: {exc}")
    share = both.frames["hotspots"]["share"][0] * 100
    assert share == pytest.approx(_children_percent(out, SET_RE), abs=0.2)


def _golden_pairs() -> pl.DataFrame:
    g = pl.read_csv(io.StringIO(_zst_text(GOLDEN / "contention_pairs.csv.zst")),
                    schema_overrides={"lock_addr": pl.UInt64, "path": pl.String, "pid": pl.Int32})
    return g.with_columns(pl.col("path").fill_null(""), pl.col("slept").cast(pl.Boolean),
                          pl.col("flags").cast(pl.UInt32)).sort(["pid", "lock_addr", "ts"])


def test_contention_waits_equal_trace_cmd_pairs(cut):
    waits, counts = contention_waits(cut, SET_RE, INT_RE)
    g = _golden_pairs()
    mine = (waits.select(g.columns).with_columns(pl.col("path").fill_null(""))
            .sort(["pid", "lock_addr", "ts"]))
    assert g.height > 10_000
    assert_frame_equal(mine, g, check_dtypes=False)
    assert counts["no_stack"] == 0 and counts["unmatched_end"] + counts["unmatched_begin"] < 10


def test_waits_per_path_from_the_pairs(cut):
    res = MutexHotspots().run(Inputs(host=(cut,)), {"bucket_s": 0.01})
    by_path = res.frames["waits_by_path"]
    g = _golden_pairs().with_columns(pl.when(pl.col("path") == "").then(pl.lit("?")).otherwise(pl.col("path"))
                                     .alias("path"))
    want = (g.group_by("path").agg(count=pl.len(), total_ns=pl.col("wait_ns").sum(), max_ns=pl.col("wait_ns").max(),
                                   sleep=pl.col("slept").sum())
            .sort("path"))
    got = by_path.select(want.columns).sort("path")
    assert_frame_equal(got, want, check_dtypes=False)


def _perf_lock_paths() -> dict[str, tuple[int, float]]:
    """``perf lock contention -v``: per entry (perf_ioctl / perf_read) of the mutex waits under
    perf_event_ctx_lock_nested: (count, total wait in ns)."""
    text = (GOLDEN / "perf_lock_contention_verbose.txt").read_text()
    unit = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}
    out: dict[str, tuple[int, float]] = {}
    head = re.compile(r"^\s+(\d+)\s+([\d.]+) (ns|us|ms|s)\s+[\d.]+ \w+\s+[\d.]+ \w+\s+(\S+)\s+\S+$")
    blocks = re.split(r"\n(?=\s+\d+\s+[\d.]+ (?:ns|us|ms|s)\s)", text)
    for b in blocks:
        lines = b.strip("\n").splitlines()
        m = head.match(lines[0]) if lines else None
        if not m or m.group(4) != "mutex":
            continue
        frames = [ln.split()[1].split("+")[0] for ln in lines[1:] if ln.strip().startswith("0x") and
                  len(ln.split()) > 1]
        if not any(re.match(SET_RE, f) for f in frames):
            continue
        entry = frames[[i for i, f in enumerate(frames) if re.match(SET_RE, f)][-1] + 1]
        c, t = out.get(entry, (0, 0.0))
        out[entry] = (c + int(m.group(1)), t + float(m.group(2)) * unit[m.group(3)])
    return out


def test_waits_consistent_with_perf_lock_contention(cut):
    """A separate run, so compare shape and ratios: the same two entries into the same mutex; the ioctl path's share
    of the wait time within 10 points; the ioctl path's waits are on average longer in both."""
    lock = _perf_lock_paths()
    assert set(lock) == {"perf_ioctl", "perf_read"}
    res = MutexHotspots().run(Inputs(host=(cut,)), {"bucket_s": 0.01})
    tp = res.frames["top_paths"].filter(pl.col("source") == "contention")
    assert set(tp["path"].to_list()) == {IOCTL, READ}
    ours = {p.split(" → ")[0]: (n, ns) for p, n, ns in tp.select("path", "samples", "lock").iter_rows()}
    share_lock = lock["perf_ioctl"][1] / (lock["perf_ioctl"][1] + lock["perf_read"][1])
    share_ours = ours["perf_ioctl"][1] / (ours["perf_ioctl"][1] + ours["perf_read"][1])
    assert share_ours == pytest.approx(share_lock, abs=0.10)
    avg = {k: v[1] / v[0] for k, v in lock.items()}
    avg_ours = {k: v[1] / v[0] for k, v in ours.items()}
    assert avg["perf_ioctl"] > avg["perf_read"] and avg_ours["perf_ioctl"] > avg_ours["perf_read"]
    by_lock = res.frames["waits_by_lock"]
    assert by_lock["kind"][0] == "mutex" and by_lock["total_ns"][0] > 0.99 * by_lock["total_ns"].sum()


def test_perf_script_text_gives_the_same_share():
    """The ``perf script`` text of the same perf.data names kernel frames itself (made on the recording host)."""
    text = _load(TESTS / "data" / "hotspots" / "perf_script.txt.zst", "perf script")
    res = MutexHotspots().run(Inputs(host=(text,)), {})
    want = _children_percent(_zst_text(GOLDEN / "perf_report_children.txt.zst"), SET_RE)
    row = res.frames["hotspots"].row(0, named=True)
    assert row["share"] * 100 == pytest.approx(want, abs=0.2)
    assert [p["path"] for p in row["top_paths"][:2]] == [IOCTL, READ]
