"""Every event's records copied out of the decoded page buffer, in time order, as the frame builders want them.

One pass over all records in time order, in steps of :data:`STEP` records: each step copies the records of each
event into a new row-chunk of that event (a (rows, words) block holding one record per row, or the payloads packed
back to back when lengths differ too much), and hands back to the OS every ring-buffer page whose records have all
been copied. The page buffer and the copies therefore never both hold the whole trace: peak memory stays near one
copy of the records, and the frames are built later, chunk by chunk (:func:`.frames.frame_from_records`).
"""

from __future__ import annotations

import mmap
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np
from numpy.lib.stride_tricks import as_strided

from tracekit.formats import EventFormat

#: records copied per step of the pass (pages are released between steps)
STEP = 1 << 20
#: bytes of record data per chunk: small consecutive chunks of an event are joined up to this size
CHUNK_BYTES = 1 << 25
#: a chunk's records are packed back to back (not one max-width row each) when rows would waste more than this
_PACK_WASTE = 2
_PACK_MIN = 1 << 20


@dataclass
class Chunk:
    """Consecutive records of one event, in time order.

    Attributes:
        words: (rows, words) uint32 with one record per row from its payload's first byte, or (``offsets`` given)
            the payloads back to back, each starting on a 4-byte boundary.
        offsets: byte offset of every record in ``words`` (packed chunks only).
        length: payload bytes of every record (an int when all are equal).
        ts: Int64 ns; ``page``: index of the record's ring-buffer page (its CPU and buffer).
    """

    words: np.ndarray
    offsets: np.ndarray | None
    length: np.ndarray | int
    ts: np.ndarray
    page: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.ts)

    def lengths(self) -> np.ndarray:
        return np.full(self.rows, self.length, np.int32) if np.isscalar(self.length) else self.length


@dataclass
class EventRecords:
    """One event's records as :class:`Chunk` s, plus the CPU and buffer index of every page."""

    chunks: list[Chunk]
    page_cpu: np.ndarray
    page_group: np.ndarray


def record_width(fmt: EventFormat, max_length: int) -> int:
    """Bytes of a record the field gathers may read: its longest payload or the format's fixed fields."""
    return max([f.offset + f.size for f in fmt.fields] + [max_length, 4])


def gather_events(u32: np.ndarray, release: Callable[[int, int], None], starts: np.ndarray, ends: np.ndarray,
                  data: np.ndarray, length: np.ndarray, ts: np.ndarray, page: np.ndarray, ids: np.ndarray,
                  fmts: dict[int, EventFormat], threads: int = 2) -> dict[int, list[Chunk]]:
    """Copy every record of the events in ``fmts`` out of the page buffer, in time order (ties: input order).

    Args:
        u32: the page buffer as native uint32 words.
        release: ``release(lo, hi)`` gives bytes ``lo:hi`` of the page buffer back; called for every run of pages
            whose records have all been copied (pages without records: at once).
        starts, ends: byte range of every ring-buffer page in the buffer.
        data, length, ts, page, ids: per record: payload byte offset, payload bytes, Int64 ns, page index,
            event id (records whose id is not in ``fmts`` are skipped); in page order, a page's in ring order.

    Returns:
        The chunks of every event id, rows in time order.
    """
    order = np.argsort(ts, kind="stable")  # ties keep the input's page (buffer, CPU) and ring order
    if len(order) < 1 << 31:
        order = order.astype(np.int32)
    left = count(page, len(starts))
    done = left == 0
    _release_runs(np.flatnonzero(done), starts, ends, release)
    out: dict[int, list[Chunk]] = {eid: [] for eid in fmts}

    def step(a: int) -> tuple[list, np.ndarray]:
        """The chunks of the records ``order[a:a + STEP]`` per event, and how many of them each page held."""
        recs = order[a:a + STEP]
        e = ids[recs]
        by_e = np.argsort(e, kind="stable")
        recs, e = recs[by_e], e[by_e]
        del by_e
        cut = np.flatnonzero(e[1:] != e[:-1]) + 1
        got = []
        for lo, hi in zip(np.r_[0, cut], np.r_[cut, len(e)], strict=True):
            fmt = fmts.get(int(e[lo]))
            if fmt is not None:
                r = recs[lo:hi]
                got.append((int(e[lo]), _copy(u32, data[r], length[r], ts[r], page[r], fmt)))
        return got, np.bincount(page[recs], minlength=len(starts))

    # ``threads`` steps at a time (numpy releases the GIL), no more: results are taken in order and the pages
    # released after each (steps running further ahead would hold more pages and copies at once)
    starts_at = iter(range(0, len(order), STEP))
    with ThreadPoolExecutor(threads) as pool:
        running = deque(pool.submit(step, a) for a in islice(starts_at, threads))
        while running:
            got, seen = running.popleft().result()
            nxt = next(starts_at, None)
            if nxt is not None:
                running.append(pool.submit(step, nxt))
            for eid, chunks in got:
                out[eid].extend(chunks)
            del got
            left -= seen
            now = (left == 0) & ~done
            done |= now
            _release_runs(np.flatnonzero(now), starts, ends, release)
    return {eid: _join(out.pop(eid)) for eid in list(out)}


def count(x: np.ndarray, n: int) -> np.ndarray:
    """``np.bincount(x, minlength=n)`` in row chunks (bincount makes an int64 copy of its input)."""
    out = np.zeros(n, np.int64)
    for a in range(0, len(x), STEP):
        out += np.bincount(x[a:a + STEP], minlength=n)[:n] if n else 0
    return out


def _release_runs(pages: np.ndarray, starts: np.ndarray, ends: np.ndarray, release) -> None:
    """``release`` every run of byte-adjacent pages among ``pages`` (ascending indices)."""
    if not len(pages):
        return
    brk = np.flatnonzero((np.diff(pages) != 1) | (starts[pages[1:]] != ends[pages[:-1]])) + 1
    for lo, hi in zip(np.r_[0, brk], np.r_[brk, len(pages)], strict=True):
        release(int(starts[pages[lo]]), int(ends[pages[hi - 1]]))


def _copy(u32: np.ndarray, data: np.ndarray, length: np.ndarray, ts: np.ndarray, page: np.ndarray,
          fmt: EventFormat) -> list[Chunk]:
    """Records (payload offsets ``data``) copied out of ``u32`` into one block, or packed chunks."""
    n = len(data)
    lmin, lmax = int(length.min()), int(length.max())
    words = min(-(-record_width(fmt, lmax) // 4), len(u32))
    if lmin != lmax and n * words * 4 > _PACK_WASTE * int(length.sum(dtype=np.int64)) + _PACK_MIN:
        return _pack(u32, data, length, ts, page)
    # every record's words in one row: a fancy row gather out of the overlapping (word, words) view
    rows = as_strided(u32, shape=(len(u32) - words + 1, words), strides=(4, 4))
    at = data >> 2
    np.minimum(at, len(u32) - words, out=at)
    return [Chunk(rows[at], None, lmax if lmin == lmax else length, ts, page)]


def _pack(u32: np.ndarray, data: np.ndarray, length: np.ndarray, ts: np.ndarray, page: np.ndarray) -> list[Chunk]:
    """Records of very unequal lengths back to back (each rounded up to whole words), in chunks of at most
    :data:`CHUNK_BYTES` (one record at least)."""
    w = (length.astype(np.int64) + 3) >> 2
    ends = np.cumsum(w)
    out = []
    lo = 0
    while lo < len(data):
        base = int(ends[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + CHUNK_BYTES // 4, side="right")))
        ww = w[lo:hi]
        dst = ends[lo:hi] - ww - base
        idx = np.repeat((data[lo:hi] >> 2) - dst, ww) + np.arange(int(ww.sum()), dtype=np.int64)
        np.clip(idx, 0, len(u32) - 1, out=idx)
        out.append(Chunk(u32[idx], dst * 4, length[lo:hi], ts[lo:hi], page[lo:hi]))
        lo = hi
    return out


def _join(chunks: list[Chunk]) -> list[Chunk]:
    """Consecutive small chunks of one kind and width joined while they stay under :data:`CHUNK_BYTES` (a few
    big chunks build faster than many small ones; big ones are left alone, copying them would cost memory)."""
    groups: list[list[Chunk]] = []
    size = 0
    for c in chunks:
        g = groups[-1] if groups else None
        if (g is not None and c.words.nbytes * 4 <= CHUNK_BYTES and (c.offsets is None) == (g[0].offsets is None)
                and (c.offsets is not None or c.words.shape[1] == g[0].words.shape[1])
                and size + c.words.nbytes <= CHUNK_BYTES):
            g.append(c)
            size += c.words.nbytes
        else:
            groups.append([c])
            size = c.words.nbytes
    out = []
    chunks.clear()  # the groups hold the chunks now: each group's pieces are freed once joined
    while groups:
        g = groups.pop(0)
        if len(g) == 1:
            out.append(g[0])
            continue
        lens = [c.length for c in g]
        same = all(np.isscalar(x) for x in lens) and len(set(lens)) == 1
        length = lens[0] if same else np.concatenate([c.lengths() for c in g])
        offsets = None
        if g[0].offsets is not None:
            base = np.cumsum([0] + [c.words.nbytes for c in g[:-1]])
            offsets = np.concatenate([c.offsets + b for c, b in zip(g, base, strict=True)])
        out.append(Chunk(np.concatenate([c.words for c in g]), offsets, length, np.concatenate([c.ts for c in g]),
                         np.concatenate([c.page for c in g])))
        del g
    return out


def page_buffer(size: int) -> tuple[np.ndarray, Callable[[int, int], None]]:
    """A zeroed uint8 buffer of ``size`` bytes (an anonymous memory map) and its ``release(lo, hi)``, which gives
    the whole OS pages inside bytes ``lo:hi`` back (they read as zeros afterwards)."""
    # private: a shared anonymous map would keep released pages alive in its shmem object
    mm = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        mm.madvise(mmap.MADV_HUGEPAGE)  # 2 MiB pages where the kernel allows: far fewer page faults filling it
    buf = np.frombuffer(mm, np.uint8, count=size)

    def release(lo: int, hi: int) -> None:
        lo = -(-lo // mmap.PAGESIZE) * mmap.PAGESIZE
        hi = hi // mmap.PAGESIZE * mmap.PAGESIZE
        if hi > lo and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    return buf, release
