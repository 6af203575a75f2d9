"""perf.data written by a big-endian host: real little-endian recordings rewritten by
:mod:`tracekit.testing.perf_endian` (integers in the other byte order, the attr bitfield as a big-endian compiler lays
it out) read back into the same frames, tables, lost counts and metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

import tracekit
from tracekit.testing.perf_endian import to_big_endian

DATA = Path(__file__).resolve().parents[1] / "data" / "perf"
META = ("hostname", "osrelease", "version", "arch", "nrcpus", "cpudesc", "cmdline", "clock", "clockid", "cpus")


@pytest.mark.parametrize("name", ["small_plain.data", "small_lost.data"])
def test_big_endian_copy_reads_the_same(name, tmp_path):
    src = DATA / name
    be = to_big_endian(src, tmp_path / name)
    assert be.read_bytes()[:8] == b"2ELIFREP"  # the u64 magic as a big-endian writer stores it
    a, b = tracekit.load(src), tracekit.load(be)
    assert a.metadata["byte_order"] == "little" and b.metadata["byte_order"] == "big"
    assert a.event_names == b.event_names
    for ev in a.event_names:
        assert b.events(ev).equals(a.events(ev)), ev
    assert b.lost_events.equals(a.lost_events)
    assert a.tables.keys() == b.tables.keys()
    for t in a.tables:
        assert b.tables[t].equals(a.tables[t]), t
    for k in META:
        assert b.metadata.get(k) == a.metadata.get(k), k
    # the attr bitfield (sample_id_all, freq, exclude_*, precise_ip …) decoded bit for bit
    assert [d["attr"] for d in b.metadata["event_desc"]] == [d["attr"] for d in a.metadata["event_desc"]]
    assert all(d["attr"]["sample_id_all"] for d in b.metadata["event_desc"])


def test_converter_refuses_what_it_cannot_convert(tmp_path):
    with pytest.raises(ValueError, match="not a little-endian perf.data"):
        to_big_endian(DATA / "small_pipe.data", tmp_path / "x")
    with pytest.raises(ValueError, match="sample_type|not converted"):
        to_big_endian(DATA / "small_sched.data", tmp_path / "y")  # tracepoint RAW data
