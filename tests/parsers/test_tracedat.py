"""trace.dat reader vs trace-cmd: every event and every scalar field of the real fixtures in tests/data/tracedat
equals the goldens made by tests/golden/tracedat/regen.sh (`trace-cmd report -R -t -N`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zstandard
from polars.testing import assert_frame_equal
from tracekit.parsers import tracedat

import tracekit

DATA = Path(__file__).resolve().parents[1] / "data" / "tracedat"
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "tracedat"
CONTENTION = ["contention_v7_zstd.dat", "contention_v7_zlib.dat", "contention_v6.dat.zst",
              "contention_v7_none.dat.zst"]
ALL = CONTENTION + ["multi_buffer.dat", "empty.dat"]

LINE = re.compile(r"^\s*(?:(?P<buf>[A-Za-z0-9_.-]+):\s+)?(?P<comm>.*?)-(?P<pid>-?\d+)\s+\[(?P<cpu>\d+)\]\s+"
                  r"(?P<ts>\d+\.\d+):\s+(?P<event>[^:\s]+):\s?(?P<rest>.*)$")
DROP = re.compile(r"^\s*(?:(?P<buf>[A-Za-z0-9_.-]+):\s+)?CPU:(?P<cpu>\d+) \[(?:(?P<n>\d+) )?EVENTS DROPPED\]")


def fixture_path(name: str, tmp_dir: Path) -> Path:
    """The fixture as a plain file (``*.dat.zst`` fixtures are decompressed into ``tmp_dir``)."""
    src = DATA / name
    if not name.endswith(".zst"):
        return src
    out = tmp_dir / name[:-4]
    if not out.exists():
        with open(src, "rb") as f, open(out, "wb") as g:
            zstandard.ZstdDecompressor().copy_stream(f, g)
    return out


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tracedat")


def golden_text(name: str) -> str:
    stem = name.removesuffix(".zst").removesuffix(".dat")
    raw = (GOLDEN / f"{stem}.raw.txt.zst").read_bytes()
    return zstandard.ZstdDecompressor().decompressobj().decompress(raw).decode("utf-8", "replace")


def parse_golden(text: str, buffers: list[str]):
    """Events per name as (buffer or None, ts, cpu, pid, comm, rest), and dropped marks (buffer, cpu, n or None)."""
    events: dict[str, list] = {}
    drops = []
    names = set(buffers)
    for line in text.splitlines():
        d = DROP.match(line)
        if d:
            drops.append((d["buf"], int(d["cpu"]), int(d["n"]) if d["n"] else None))
            continue
        m = LINE.match(line)
        if not m:
            continue
        buf = m["buf"]
        comm = m["comm"]
        if buf is not None and buf not in names:  # a comm holding ': ' — no buffer prefix on this line
            comm, buf = line.strip().rsplit("-" + m["pid"], 1)[0], None
        sec, frac = m["ts"].split(".")
        ts = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
        events.setdefault(m["event"], []).append((buf, ts, int(m["cpu"]), int(m["pid"]), comm.strip(), m["rest"]))
    return events, drops


def split_fields(rest: str, names: list[str]) -> dict[str, str]:
    """'a=1 b=x y c=3' split with the known field names in order (values may hold spaces)."""
    if not names:
        return {}
    pos = [(m.start(1), m.group(1)) for m in re.finditer(r"(?:^| )(" + "|".join(map(re.escape, names)) + r")=", rest)]
    out = {}
    for i, (start, name) in enumerate(pos):
        vstart = start + len(name) + 1
        vend = pos[i + 1][0] - 1 if i + 1 < len(pos) else len(rest)
        out.setdefault(name, rest[vstart:vend])
    return out


def as_int(text: str) -> int | None:
    t = text.strip()
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    if re.fullmatch(r"0x[0-9a-fA-F]+", t):
        return int(t, 16)
    return None


def compare_event(tr: tracekit.Trace, name: str, rows: list) -> int:
    """Assert every row and scalar field of event ``name`` equals trace-cmd's; returns rows compared."""
    df = tr.events(name)
    assert df.height == len(rows), f"{name}: {df.height} rows, trace-cmd {len(rows)}"
    fmt = tr.format_of(name)
    widths = {f.name: f.size for f in fmt.own_fields}
    scalar = [c for c, t in df.schema.items() if c in widths and (t.is_integer() or t == pl.String)]
    stack = fmt.system == "ftrace" and fmt.name == "kernel_stack"
    got = df.with_row_index("_i").sort(["ts", "cpu", "_i"])
    want = sorted(enumerate(rows), key=lambda r: (r[1][1], r[1][2], r[0]))
    has_buf = "buffer" in df.columns
    for (_, (buf, ts, cpu, pid, comm, rest)), rec in zip(want, got.iter_rows(named=True), strict=True):
        assert (rec["ts"], rec["cpu"], rec["common_pid"]) == (ts, cpu, pid), (name, rec, ts, cpu, pid)
        if has_buf and buf is not None:
            assert rec["buffer"] == buf
        want_comm = None if comm == "<...>" else comm
        assert rec["common_comm"] == want_comm, (name, ts, rec["common_comm"], comm)
        vals = split_fields(rest, scalar + (["caller"] if stack else []))
        for c in scalar:
            assert c in vals, f"{name}.{c} not printed by trace-cmd at {ts}"
            w, g = vals[c], rec[c]
            if isinstance(g, str):
                assert g.strip() == w.strip(), (name, c, ts, g, w)
            else:
                wi = as_int(w)
                if wi is None and tr.kallsyms is not None:  # libtraceevent prints a function pointer's symbol
                    sym, off = tr.kallsyms.resolve(np.array([g], np.uint64))
                    assert w.strip() == (sym[0] if not off[0] else f"{sym[0]}+0x{int(off[0]):x}"), (name, c, g, w)
                    continue
                assert wi is not None and (wi - g) % (1 << (8 * widths[c])) == 0, (name, c, ts, g, w)
        if stack:  # trace-cmd -R prints caller as the format's 8 words, whatever size says
            words = bytes(int(x, 16) for x in re.findall(r"[0-9a-f]{2}", vals["caller"].split("[", 1)[1]))
            printed = np.frombuffer(words, ">u8" if tr.metadata["endianness"] == "big" else "<u8").tolist()
            n = min(rec["size"], len(printed))
            assert rec["caller"][:n] == printed[:n], (ts, rec["caller"], printed)
            assert len(rec["caller"]) == rec["size"]
    return len(rows)


@pytest.mark.parametrize("name", ALL)
def test_every_event_and_field_matches_trace_cmd(name, tmp_dir):
    path = fixture_path(name, tmp_dir)
    tr = tracekit.load(path)
    assert tr.damage == []
    events, drops = parse_golden(golden_text(name), [b["name"] for b in tr.metadata["buffers"]])
    assert sorted(tr.counts().filter(pl.col("count") > 0)["event"]) == sorted(events)
    total = sum(compare_event(tr, ev, rows) for ev, rows in events.items())
    assert total == tr.total_events
    lost = tr.lost_events
    want_counted = sum(n for _, _, n in drops if n is not None)
    want_unknown = sum(1 for _, _, n in drops if n is None)
    assert (int(lost["lost"].sum() or 0), int(lost["lost_unknown"].sum() or 0)) == (want_counted, want_unknown)


def test_golden_is_what_trace_cmd_prints_now(tmp_dir):
    if shutil.which("trace-cmd") is None:
        pytest.skip("trace-cmd not installed: goldens cannot be re-checked")
    path = fixture_path("contention_v6.dat.zst", tmp_dir)
    out = subprocess.run(["trace-cmd", "report", "-R", "-t", "-N", str(path)], capture_output=True, text=True,
                         errors="replace", check=True).stdout
    assert out == golden_text("contention_v6.dat.zst")


def test_versions_and_compressions_give_identical_frames(tmp_dir):
    ref = tracekit.load(fixture_path(CONTENTION[0], tmp_dir))
    assert ref.total_events > 20_000
    for name in CONTENTION[1:]:
        other = tracekit.load(fixture_path(name, tmp_dir))
        assert other.event_names == ref.event_names
        for ev in ref.event_names:
            assert_frame_equal(other.events(ev), ref.events(ev))


def test_metadata_formats_symbols(tmp_dir):
    tr = tracekit.load(fixture_path("contention_v7_zstd.dat", tmp_dir))
    md = tr.metadata
    assert (md["version"], md["compression"], md["endianness"], md["long_size"], md["page_size"]) == \
        (7, "zstd", "little", 8, 4096)
    assert md["clock"] == "local" and md["cpus"] == 2 and md["ts_unit"] == "ns"
    full = tracekit.load(fixture_path("multi_buffer.dat", tmp_dir)).metadata  # `trace-cmd split` drops options
    assert full["uname"].startswith("Linux ") and full["tracer_version"].startswith("3.")
    assert isinstance(full["trace_id"], int) and full["cpustats"] and "[local]" in full["trace_clocks"]
    assert {o["name"] for o in full["options"]} >= {"uname", "version", "traceclock", "cpustat", "buffer",
                                                     "cpucount", "traceid"}
    # the v7 section chain named through the strings section, as `trace-cmd dump --sections` lists it
    secs = [(s["id"], s["description"]) for s in full["sections"]]
    assert (19, "kallsyms") in secs and (15, "strings") in secs and (3, "buffer flyrecord tk_irq") in secs
    assert [s["id"] for s in full["sections"]][:6] == [16, 17, 18, 19, 20, 21]
    assert md["printk_formats"] and all(isinstance(k, int) and isinstance(v, str)
                                        for k, v in md["printk_formats"].items())
    cmd = tr.tables["cmdlines"]
    assert cmd.schema == {"pid": pl.Int32, "comm": pl.String} and cmd.height > 10
    assert tr.kallsyms is not None and len(tr.kallsyms) > 10_000
    v6 = tracekit.load(fixture_path("contention_v6.dat.zst", tmp_dir))
    assert v6.metadata["version"] == 6 and v6.metadata["compression"] == "none"
    assert_frame_equal(v6.tables["cmdlines"], cmd)
    assert v6.metadata["printk_formats"] == md["printk_formats"]


def test_frame_schema_follows_the_format(tmp_dir):
    tr = tracekit.load(fixture_path("contention_v7_zstd.dat", tmp_dir))
    for name in tr.event_names:
        df = tr.events(name)
        fmt = tr.format_of(name)
        assert list(df.columns[:6]) == ["ts", "cpu", "common_pid", "common_flags", "common_preempt_count",
                                        "common_comm"]
        assert df.schema["ts"] == pl.Int64 and df.schema["cpu"] == pl.Int32 and df.schema["common_comm"] == pl.String
        for f in fmt.fields:
            if f.name != "common_type":
                assert df.schema[f.name] == f.dtype(8), (name, f.name)
        assert df["ts"].is_sorted()
    ks = tr.events("kernel_stack")
    assert ks.schema["caller"] == pl.List(pl.UInt64) and ks.schema["callers"] == pl.List(pl.String)
    assert ks["size"].max() > 8 and (ks["caller"].list.len() == ks["size"]).all()
    names = ks["callers"].explode().drop_nulls()
    assert names.str.contains("__mutex_lock").any() and names.str.contains("perf_event_ctx_lock_nested").any()
    assert (ks["callers"].list.len() == ks["size"]).all()


def test_rows_merge_cpus_in_time_order(tmp_dir):
    tr = tracekit.load(fixture_path("contention_v7_zstd.dat", tmp_dir))
    both = pl.concat([tr.events(n).select("ts", "cpu") for n in tr.event_names])
    assert both["cpu"].n_unique() == 2
    for name in tr.event_names:
        df = tr.events(name)
        assert df.select((pl.col("ts").diff() >= 0).all()).item() in (True, None)


def test_multi_buffer_and_one_buffer(tmp_dir):
    path = fixture_path("multi_buffer.dat", tmp_dir)
    tr = tracekit.load(path)
    bufs = {b["name"]: b for b in tr.metadata["buffers"]}
    assert set(bufs) == {"", "tk_sched", "tk_irq", "tk_lost"}
    assert bufs[""]["cpus"] == 0  # a real buffer with zero CPUs
    sizes = {b["page_size"] for b in bufs.values()}
    assert 8192 in sizes or sizes == {4096}
    for name in tr.event_names:
        assert "buffer" in tr.events(name).columns
    assert set(tr.lost_events.columns) == {"cpu", "lost", "lost_unknown", "buffer"}
    assert tr.lost_total > 0 and set(tr.lost_events["buffer"]) == {"tk_lost"}
    # every page flagged by the kernel is placed in time on its CPU; the marks add up to the per-CPU totals
    marks = tr.tables["lost_marks"]
    assert set(marks["buffer"]) == {"tk_lost"} and marks["ts"].null_count() == 0
    per_cpu = marks.group_by("buffer", "cpu").agg(pl.col("lost").sum(), pl.col("lost_unknown").sum())
    assert_frame_equal(per_cpu.sort("cpu"), tr.lost_events.select(per_cpu.columns).sort("cpu"), check_dtypes=False)
    assert marks.filter(pl.col("prev_ts").is_not_null() & (pl.col("prev_ts") > pl.col("ts"))).is_empty()
    one = tracekit.load(path, buffer="tk_irq")
    n = tr.events("irq_handler_entry").filter(pl.col("buffer") == "tk_irq").height if tr.has("irq_handler_entry") \
        else None
    assert "buffer" not in one.events(one.event_names[0]).columns
    if n is not None:
        assert one.events("irq_handler_entry").height == n
    with pytest.raises(tracekit.TracekitError, match="no buffer 'nope'"):
        tracekit.load(path, buffer="nope")


def test_empty_trace_loads_as_empty(tmp_dir):
    tr = tracekit.load(fixture_path("empty.dat", tmp_dir))
    assert tr.total_events == 0 and tr.damage == [] and tr.lost_total == 0
    assert tr.metadata["cpus"] == 2 and tr.kallsyms is not None


def test_sniff():
    assert tracedat.sniff((DATA / "empty.dat").read_bytes()[:64])
    assert not tracedat.sniff(b"PERFILE2")


def test_big_endian_and_32_bit_long_reencodings(tmp_dir):
    """BE and 4-byte-long decoding, on re-encodings (made by tests/parsers/tracedat_reencode.py) of a real file:
    trace-cmd cannot record either on this host."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tracedat_reencode import reencode

    src = fixture_path("contention_v7_none.dat.zst", tmp_dir)
    ref = tracekit.load(src)
    for big, long_size in ((True, 8), (False, 4), (True, 4)):
        dst = tmp_dir / f"reenc_{int(big)}_{long_size}.dat"
        padded = reencode(src, dst, big=big, long_size=long_size)
        tr = tracekit.load(dst)
        assert tr.damage == []
        md = tr.metadata
        assert (md["endianness"], md["long_size"], md["kernel_long_size"], md["version"]) == \
            ("big" if big else "little", long_size, long_size, 6)
        assert md["uname"] == "Linux re-encoded"
        gone = {k.split(":")[-1] for k in padded}
        assert set(tr.event_names) == set(ref.event_names) - gone
        assert long_size == 8 or gone == {"kernel_stack"}
        for name in tr.event_names:
            assert_frame_equal(tr.events(name), ref.events(name))


def test_bprint_arguments_follow_vbin_printf():
    """No real fixture holds bprint records (trace_printk needs a module): the argument layout is checked on bytes
    laid out as lib/vsprintf.c vbin_printf() does (4-byte aligned numbers, inline strings)."""
    from tracekit.parsers.tracedat.bprint import format_args

    buf = ((-5).to_bytes(4, "little", signed=True) + b"abc\0" + (0xFFFFFFFF81000010).to_bytes(8, "little")
           + (7).to_bytes(8, "little") + b"z" + b"\0\0\0" + (3).to_bytes(4, "little") + (0x2A).to_bytes(4, "little"))
    text = format_args("x=%d s=%s f=%ps n=%lu%% c=%c w=%*x\n", buf, 8, False,
                       lambda a: "fn+0x10" if a == 0xFFFFFFFF81000010 else None)
    assert text == "x=-5 s=abc f=fn+0x10 n=7% c=z w= 2a\n"
    be = (42).to_bytes(4, "big") + b"hi\0"
    assert format_args("%u %s|%5d|", be + b"\0" + (9).to_bytes(4, "big"), 8, True) == "42 hi|    9|"


def test_reencodings_and_time_options_match_trace_cmd(tmp_dir):
    """trace-cmd itself reads the big-endian / 4-byte-long re-encodings, and applies TSC2NSEC and OFFSET options:
    every event and field must equal what it prints."""
    if shutil.which("trace-cmd") is None:
        pytest.skip("trace-cmd not installed: re-encodings cannot be checked against it")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tracedat_reencode import reencode

    src = fixture_path("contention_v7_none.dat.zst", tmp_dir)
    tsc = (3).to_bytes(4, "big") + (1).to_bytes(4, "big") + (0).to_bytes(8, "big")  # ts * 3 >> 1
    for big, long_size, opts in ((True, 8, ()), (False, 4, ()), (True, 4, ((14, tsc), (7, b"1000000007\0")))):
        dst = tmp_dir / f"oracle_{int(big)}_{long_size}_{len(opts)}.dat"
        reencode(src, dst, big=big, long_size=long_size, options=opts)
        text = subprocess.run(["trace-cmd", "report", "-R", "-t", "-N", str(dst)], capture_output=True, text=True,
                              errors="replace", check=True).stdout
        tr = tracekit.load(dst)
        events, _ = parse_golden(text, [""])
        assert events and sorted(events) == sorted(tr.event_names)
        assert sum(compare_event(tr, ev, rows) for ev, rows in events.items()) == tr.total_events
        if opts:
            assert tr.metadata["tsc2nsec"] == {"mult": 3, "shift": 1, "offset": 0}
            assert tr.metadata["offset"] == "1000000007"
