"""perf.data reader against goldens made by the real ``perf script`` (tests/golden/perf/regen.py).

Fixtures (tests/data/perf/): host-contention.perf.data (perf record -a -g of ../shared/data/host-contention) and
small recordings made with the guest command line by tests/golden/perf/record_fixtures.sh: plain, zstd-compressed,
``--threads`` directory, pipe mode, tracepoints.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zstandard
from tracekit.parsers import perf_data, perf_script

from tracekit.errors import ParseError, TracekitError
from tracekit.symbols import Kallsyms

DATA = Path(__file__).resolve().parents[1] / "data" / "perf"
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "perf"
FIXTURES = ["host-contention.perf.data", "small_plain.data", "small_zstd.data", "small_threads.data",
            "small_pipe.data", "small_sched.data", "small_lost.data"]
KERNEL = 0xFFFF800000000000


def _stem(name: str) -> str:
    return name.removesuffix(".data").removesuffix(".perf")


def _kallsyms(name: str) -> Kallsyms:
    text = zstandard.ZstdDecompressor().decompress((GOLDEN / f"{_stem(name)}.kallsyms.zst").read_bytes(),
                                                   max_output_size=1 << 26).decode()
    return Kallsyms.parse(text)


_cache: dict[str, object] = {}


def _mine(name: str):
    if name not in _cache:
        _cache[name] = perf_data.read(DATA / name, kallsyms=_kallsyms(name))
    return _cache[name]


def _golden(name: str):
    return perf_script.read(GOLDEN / f"{_stem(name)}.script.txt.zst")


_KEY = ["ts", "cpu", "tid", "period"]


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    first = pl.col("callchain_ip").list.first().fill_null(0).alias("_first")
    return df.with_columns(first).sort(_KEY + ["_first"]).drop("_first")


@pytest.mark.parametrize("name", FIXTURES)
def test_samples_equal_perf_script(name):
    """Every sample's ts, cpu, pid, tid, comm, period and callchain addresses equal perf script's; kernel frame
    names equal (with the recording machine's kallsyms)."""
    mine, gold = _mine(name), _golden(name)
    assert sorted(mine.event_names) == sorted(gold.event_names)
    for ev in gold.event_names:
        g, m = _sorted(gold.events(ev)), _sorted(mine.events(ev))
        assert m.height == g.height, ev
        for col in ("ts", "cpu", "pid", "tid", "period", "comm"):
            assert m[col].to_list() == g[col].to_list(), (ev, col)
        assert m["callchain"].list.len().to_list() == g["callchain"].list.len().to_list()
        mi = m["callchain_ip"].explode().to_numpy()
        gi = g["callchain_ip"].explode().to_numpy()
        ms = np.array(m["callchain"].explode().to_list(), dtype=object)
        gs = np.array(g["callchain"].explode().to_list(), dtype=object)
        kern = gi >= KERNEL
        assert (mi[kern] == gi[kern]).all(), ev
        assert (ms[kern] == gs[kern]).all(), (ev, list(zip(ms[kern][ms[kern] != gs[kern]][:5],
                                                           gs[kern][ms[kern] != gs[kern]][:5], strict=False)))
        # perf prints user frames relative to their map: the page offset survives
        assert ((mi[~kern] & 0xFFF) == (gi[~kern] & 0xFFF)).all(), ev
        if not len(gi):  # no callchain: the sample ip itself
            kern_ip = g["ip"].to_numpy() >= KERNEL
            assert (m["ip"].to_numpy()[kern_ip] == g["ip"].to_numpy()[kern_ip]).all()
            assert m["sym"].to_numpy()[kern_ip].tolist() == g["sym"].to_numpy()[kern_ip].tolist()


def test_the_three_encodings_share_one_shape():
    for name in ("small_plain.data", "small_zstd.data", "small_threads.data", "small_pipe.data"):
        t = _mine(name)
        assert t.format == "perf.data"
        df = t.events("cpu-clock")
        assert df.schema["ts"] == pl.Int64 and df.schema["ip"] == pl.UInt64
        assert df.schema["callchain"] == pl.List(pl.String) and df.schema["callchain_ip"] == pl.List(pl.UInt64)
        assert df.height > 50
        assert df["ts"].is_sorted()
        # context markers are gone, as in perf script
        assert df["callchain_ip"].explode().max() < 2**64 - 4095
    assert _mine("small_zstd.data").metadata["compressed"]["type"] == "zstd"
    assert _mine("small_threads.data").metadata["dir_format"]["version"] == 1
    assert _mine("small_pipe.data").metadata["pipe"] is True


def test_metadata_features():
    md = _mine("host-contention.perf.data").metadata
    header = zstandard.ZstdDecompressor().decompress((GOLDEN / "small_plain.header.txt.zst").read_bytes(),
                                                     max_output_size=1 << 24).decode()
    plain = _mine("small_plain.data").metadata
    for key, label in (("hostname", "hostname"), ("osrelease", "os release"), ("arch", "arch"),
                       ("cpudesc", "cpudesc")):
        m = re.search(rf"^# {label}\s*: (.*)$", header, re.M)
        assert m and plain[key] == m.group(1).strip(), key
    assert plain["nrcpus"]["online"] == int(re.search(r"# nrcpus online\s*: (\d+)", header).group(1))
    assert plain["clock_data"]["clock"] == "monotonic_raw"
    assert "--clockid=CLOCK_MONOTONIC_RAW" in plain["cmdline"]
    assert [d["name"] for d in plain["event_desc"]][:2] == ["cpu-clock", "task-clock"]
    assert plain["cpu_topology"]["core_siblings"]
    assert md["osrelease"] == "6.18.44-fc-v669"
    assert md["kallsyms_source"] == "given"


def test_tracepoint_fields_decoded_from_raw():
    t = _mine("small_sched.data")
    gold = _golden("small_sched.data")
    m, g = t.events("sched:sched_switch"), gold.events("sched:sched_switch")
    assert m.height == g.height
    assert m.schema["prev_pid"] == pl.Int32 and m.schema["next_comm"] == pl.String
    parsed = g.with_columns(pl.col("fields").str.extract(r"prev_pid=(\d+)").cast(pl.Int32).alias("prev_pid"),
                            pl.col("fields").str.extract(r"next_pid=(\d+)").cast(pl.Int32).alias("next_pid"),
                            pl.col("fields").str.extract(r"prev_comm=(.*?) prev_pid=").alias("prev_comm"))
    assert m.sort(["ts", "cpu"])["prev_pid"].to_list() == parsed.sort(["ts", "cpu"])["prev_pid"].to_list()
    assert m.sort(["ts", "cpu"])["next_pid"].to_list() == parsed.sort(["ts", "cpu"])["next_pid"].to_list()
    assert m.sort(["ts", "cpu"])["prev_comm"].to_list() == parsed.sort(["ts", "cpu"])["prev_comm"].to_list()
    assert "sched:sched_switch" in t.formats
    w, gw = t.events("sched:sched_wakeup").sort(["ts", "cpu"]), gold.events("sched:sched_wakeup").sort(["ts", "cpu"])
    assert w["tp_pid"].to_list() == gw["fields"].str.extract(r" pid=(\d+)").cast(pl.Int32).to_list()
    assert w["tp_comm"].to_list() == gw["fields"].str.extract(r"^comm=(.*?) pid=").to_list()


def test_tables_and_lost():
    t = _mine("host-contention.perf.data")
    assert {"comm", "mmap2", "fork", "exit"} <= set(t.tables)
    assert t.tables["comm"].filter(pl.col("comm") == "perf_ctx_conten").height >= 1
    assert t.lost_events.schema == {"cpu": pl.Int32, "lost": pl.Int64, "lost_unknown": pl.Int64}
    assert t.lost_total == 0
    assert t.metadata["record_counts"]["sample"] == sum(t.events(e).height for e in t.event_names)


def test_kernel_names_keep_compiler_suffixes():
    df = _mine("host-contention.perf.data").events("cpu-clock")
    names = set(df["callchain"].explode().unique().to_list())
    assert "perf_event_ctx_lock_nested.isra.0" in names
    assert "__mutex_lock.constprop.0" in names


@pytest.mark.skipif(shutil.which("perf") is None, reason="perf not installed")
@pytest.mark.parametrize("name", FIXTURES)
def test_oracle_ip_exact(name):
    """With perf installed: every (event, ts, cpu, tid, period, ip) equals ``perf script -F ... -G``."""
    r = subprocess.run(["perf", "script", "-i", str(DATA / name), "--ns", "-F", "tid,cpu,time,period,event,ip",
                        "-G"], capture_output=True, text=True, errors="replace")
    rx = re.compile(r"^\s*(-?\d+)\s+\[(\d+)\]\s+(\d+)\.(\d+):\s+(\d+)\s+(\S+?):\s+([0-9a-f]+)\s*$")
    want = sorted((m[6], int(m[3]) * 10**9 + int(m[4]), int(m[2]), int(m[1]), int(m[5]), int(m[7], 16))
                  for m in map(rx.match, r.stdout.splitlines()) if m)
    t = _mine(name)
    got = sorted((ev, *row) for ev in t.event_names
                 for row in t.events(ev).select("ts", "cpu", "tid", "period", "ip").iter_rows())
    assert want and got == want


# -- damage ----------------------------------------------------------------------------------------------------
def test_truncated_file_keeps_what_was_read(tmp_path):
    src = (DATA / "small_plain.data").read_bytes()
    full = _mine("small_plain.data")
    n_full = sum(full.events(e).height for e in full.event_names)
    hdr = perf_data.layout.perf_file_header
    fh = np.frombuffer(src[: hdr.itemsize], dtype=hdr)[0]
    doff, dsize = int(fh["data"]["offset"]), int(fh["data"]["size"])
    cut = doff + dsize * 2 // 3 + 3  # mid-record
    p = tmp_path / "cut.data"
    p.write_bytes(src[:cut])
    t = perf_data.read(p)
    n = sum(t.events(e).height for e in t.event_names)
    assert 0 < n < n_full
    assert t.damage and isinstance(t.damage[0], ParseError)
    assert any(d.offset is not None and doff <= d.offset <= cut for d in t.damage)


@pytest.mark.parametrize("name", ["small_plain.data", "small_zstd.data", "small_pipe.data"])
def test_corruption_never_escapes_the_error_tree(tmp_path, name):
    src = bytearray((DATA / name).read_bytes())
    rng = np.random.default_rng(4)
    p = tmp_path / "bad.data"
    cuts = sorted(set(rng.integers(0, len(src), 20).tolist()) | {0, 7, 8, 16, 100, 104, len(src) - 1})
    for cut in cuts:
        p.write_bytes(bytes(src[:cut]))
        try:
            perf_data.read(p)
        except TracekitError as exc:
            assert "@" in str(exc) or "bad.data" in str(exc)
    for off in rng.integers(0, len(src), 30).tolist():
        bad = bytearray(src)
        bad[off] ^= 0xFF
        bad[min(off + 6, len(bad) - 1)] ^= 0x5A
        p.write_bytes(bytes(bad))
        try:
            t = perf_data.read(p)
        except TracekitError:
            continue
        for d in t.damage:
            assert isinstance(d, ParseError)


def test_not_perf_data(tmp_path):
    p = tmp_path / "x.data"
    p.write_bytes(b"NOTPERF!" + bytes(200))
    with pytest.raises(TracekitError):
        perf_data.read(p)
    assert perf_data.sniff((DATA / "small_plain.data").read_bytes()[:64])
    assert perf_data.sniff((DATA / "small_pipe.data").read_bytes()[:64])
    assert not perf_data.sniff(b"# tracer: nop\n")


def test_big_endian_layouts_swap():
    le = perf_data.layout.perf_event_header
    be = perf_data.layout.swapped(le)
    rec = np.frombuffer(b"\x00\x00\x00\x09\x00\x02\x00\x50", dtype=be)[0]
    assert (int(rec["type"]), int(rec["misc"]), int(rec["size"])) == (9, 2, 0x50)


def test_kallsyms_from_a_trace_loaded_alongside():
    from tracekit.model import Trace

    ks = _kallsyms("host-contention.perf.data")
    tdat = Trace(source="trace.dat", format="trace.dat", frames={}, kallsyms=ks)
    t = perf_data.read(DATA / "host-contention.perf.data", kallsyms=tdat)
    assert t.metadata["kallsyms_source"] == "trace.dat"
    names = t.events("cpu-clock")["callchain"].explode()
    assert (names == "perf_event_ctx_lock_nested.isra.0").sum() > 1000
    bare = perf_data.read(DATA / "host-contention.perf.data")  # recorded on another kernel build: no kallsyms fits
    assert bare.metadata["kallsyms_source"] in ("none", "/proc/kallsyms")


def test_lost_records_equal_perf_script_show_lost_events():
    t, gold = _mine("small_lost.data"), _golden("small_lost.data")
    want = gold.tables["lost"].sort(["ts", "cpu"])
    got = t.tables["lost"].sort(["ts", "cpu"])
    assert want.height > 10
    assert got["lost"].cast(pl.Int64).to_list() == want["lost"].to_list()
    assert got["cpu"].to_list() == want["cpu"].to_list()
    assert got["ts"].to_list() == want["ts"].to_list()
    assert t.lost_events.sort("cpu").equals(gold.lost_events.sort("cpu"))
    per = t.metadata["lost_samples_per_event"]  # perf's end-of-run totals, as `perf report --stats` shows them
    assert per["cpu-clock"] >= int(want["lost"].sum())


@pytest.mark.parametrize("name", ["small_plain.data", "small_zstd.data", "small_pipe.data", "small_lost.data"])
def test_chunked_walk_equals_one_sequential_walk(name, monkeypatch):
    """The lockstep walk finds the same record offsets whatever the chunk size (one chunk = a plain walk)."""
    from tracekit.parsers.perf_data import records as R

    data = (DATA / name).read_bytes()
    head = np.frombuffer(data[:16], dtype="<u8")
    if int(head[1]) == 16:  # pipe mode
        body, base = memoryview(data)[16:], 16
    else:
        fh = np.frombuffer(data[: perf_data.layout.perf_file_header.itemsize],
                           dtype=perf_data.layout.perf_file_header)[0]
        o, n = int(fh["data"]["offset"]), int(fh["data"]["size"])
        body, base = memoryview(data)[o:o + n], o
    stream = R.Stream.from_bytes(body, name, base, False)
    monkeypatch.setattr(R, "_CHUNK", 1 << 40)
    ref, dmg = R.walk(stream)
    assert dmg is None and len(ref) > 100
    for chunk in (64, 512, 4096):
        monkeypatch.setattr(R, "_CHUNK", chunk)
        got, dmg = R.walk(stream)
        assert dmg is None and np.array_equal(got, ref), chunk
