"""The in-memory trace.dat reader's record copies (parsers/tracedat/records.py): cut into many steps and chunks,
packed or not, the frames are the same; every page of the page buffer is handed back exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest
from polars.testing import assert_frame_equal
from tracekit.parsers import tracedat
from tracekit.parsers.tracedat import records

import tracekit

DATA = Path(__file__).resolve().parents[1] / "data" / "tracedat"


@pytest.mark.parametrize("name", ["contention_v7_zstd.dat", "multi_buffer.dat"])
def test_small_steps_chunks_and_packed_records_give_the_same_frames(name, monkeypatch):
    path = DATA / name
    ref = tracekit.load(path)
    want = {k: ref.events(k) for k in ref.frames}
    monkeypatch.setattr(records, "STEP", 97)  # many steps, two in flight; chunks joined up to 4 KiB
    monkeypatch.setattr(records, "CHUNK_BYTES", 1 << 12)
    for pack in (False, True):
        if pack:  # every event of unequal record lengths packed back to back
            monkeypatch.setattr(records, "_PACK_WASTE", 0)
            monkeypatch.setattr(records, "_PACK_MIN", 0)
        tr = tracekit.load(path)
        assert tr.counts().equals(ref.counts()) and tr.damage == ref.damage == []
        chunked = 0
        for key, df in want.items():
            got = tr.events(key)
            chunked += got.n_chunks() > 1
            assert_frame_equal(got, df)
        assert chunked >= 3


def test_every_page_is_released_once(monkeypatch):
    seen = []

    def page_buffer(size):
        buf, release = records.page_buffer(size)
        seen.append((size, []))

        def rel(lo, hi):
            seen[-1][1].append((lo, hi))
            release(lo, hi)

        return buf, rel

    monkeypatch.setattr(tracedat, "page_buffer", page_buffer)
    monkeypatch.setattr(records, "STEP", 1000)
    tr = tracekit.load(DATA / "contention_v7_zstd.dat")
    (size, ranges), = seen
    ranges.sort()
    assert all(a < b for a, b in ranges)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:], strict=False))  # disjoint
    page_size = tr.metadata["page_size"]
    assert sum(b - a for a, b in ranges) == (size - 16) // page_size * page_size  # every page, the padding kept
