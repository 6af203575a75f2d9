"""perf script text reader on real ``perf script`` outputs (tests/golden/perf/regen.py), checked against the
perf.data reader of the same recordings and against the text itself."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import zstandard
from tracekit.parsers import perf_data, perf_script

from tracekit.errors import TracekitError

DATA = Path(__file__).resolve().parents[1] / "data" / "perf"
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "perf"


def _text(name: str) -> str:
    return zstandard.ZstdDecompressor().decompress((GOLDEN / name).read_bytes(), max_output_size=1 << 28).decode()


def _binary(name: str):
    return perf_data.read(DATA / name)


def test_default_output_with_callchains_counts_every_sample():
    t = perf_script.read(GOLDEN / "small_plain.script.txt.zst")
    text = _text("small_plain.script.txt.zst")
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert sum(t.events(e).height for e in t.event_names) == len(blocks)
    frames = sum(len(b.splitlines()) - 1 for b in blocks)
    assert sum(int(t.events(e)["callchain"].list.len().sum()) for e in t.event_names) == frames
    assert t.unparsed_lines is None
    assert t.format == "perf-script"


def test_without_callchains_and_field_selection_match_perf_data():
    b = _binary("small_plain.data")
    noc = perf_script.read(GOLDEN / "small_plain.noc.txt.zst")
    sel = perf_script.read(GOLDEN / "small_plain.fields.txt.zst")
    for ev in b.event_names:
        want = b.events(ev).sort(["ts", "tid"])
        for t, cols in ((noc, ["ts", "cpu", "tid", "period", "comm", "ip"]), (sel, ["ts", "tid", "ip"])):
            got = t.events(ev).sort(["ts", "tid"])
            assert got.height == want.height
            for c in cols:
                assert got[c].to_list() == want[c].to_list(), (ev, c)
        assert sel.events(ev)["comm"].null_count() == sel.events(ev).height  # -F without comm: null, not guessed
        assert noc.events(ev)["callchain"].list.len().max() == 0


def test_header_block_is_metadata():
    t = perf_script.read(GOLDEN / "small_plain.header.txt.zst")
    b = _binary("small_plain.data")
    assert t.metadata["hostname"] == b.metadata["hostname"]
    assert t.metadata["os_release"] == b.metadata["osrelease"]
    assert any("cpu-clock" in e for e in t.metadata["event_desc"])


def test_unknown_frames_comm_with_spaces_and_dash_tid(tmp_path):
    text = _text("host-contention.script.txt.zst")
    t = perf_script.read(GOLDEN / "host-contention.script.txt.zst")
    df = t.events("cpu-clock")
    assert "[unknown]" in df["callchain"].explode().unique().to_list()
    assert df.height == text.count(" cpu-clock:")
    # a comm with spaces, as perf prints a thread renamed by prctl(PR_SET_NAME)
    lines = text.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("perf-exec"))
    block = "\n".join(lines[first:lines.index("", first)])
    p = tmp_path / "spaces.txt"
    p.write_text(block.replace("perf-exec", "my worker 1", 1) + "\n\n" + block.replace(" 27767/27767 ", "   -1/-1    ")
                 + "\n")
    s = perf_script.read(p).events("cpu-clock")
    assert s["comm"].to_list() == ["my worker 1", "perf-exec"]
    assert s["tid"].to_list() == [27767, -1]
    assert s["callchain"].list.len().to_list() == [block.count("\n")] * 2


def test_tracepoint_fields_kept_as_text():
    t = perf_script.read(GOLDEN / "small_sched.script.txt.zst")
    sw = t.events("sched:sched_switch")
    assert sw["fields"].str.contains("prev_comm=").all()
    assert sw["ip"].null_count() == 0 and sw["sym"].null_count() == 0


def test_sniff_and_errors(tmp_path):
    assert perf_script.sniff(_text("small_plain.script.txt.zst")[:4096].encode())
    assert perf_script.sniff(_text("small_plain.header.txt.zst")[:4096].encode())
    assert not perf_script.sniff(b"PERFILE2" + bytes(100))
    assert not perf_script.sniff(b"# tracer: nop\n#\n  <idle>-0  [000] d..1  1.0: cpu_idle: state=1\n")
    p = tmp_path / "junk.txt"
    p.write_text("hello\nworld\n")
    with pytest.raises(TracekitError):
        perf_script.read(p)
    p.write_bytes(b"a\0b")
    with pytest.raises(TracekitError):
        perf_script.read(p)


def test_frames_have_the_perf_schema():
    t = perf_script.read(GOLDEN / "small_zstd.script.txt.zst")
    for ev in t.event_names:
        schema = t.events(ev).schema
        for col, dtype in perf_script.SCHEMA.items():
            assert schema[col] == dtype, col
    assert isinstance(t.events("cpu-clock"), pl.DataFrame)
