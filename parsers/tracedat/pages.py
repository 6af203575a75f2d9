"""Vectorised decoding of Linux ring-buffer sub-buffers ("pages") as trace.dat stores them.

Implements the sub-buffer layout of ``events/header_page`` (``timestamp``, ``commit`` = a kernel long whose bits 31/30
flag missed events) and the record headers of ``events/header_event`` (``type_len`` 0..31, ``time_delta``), following
libtraceevent's kbuffer-parse.c (the reader trace-cmd uses). All pages of all CPUs are walked in lock-step: one numpy
step reads the next record header of every page at once, so the Python loop runs once per record *slot* of a page
(at most page_size/4 times), never once per event.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tracekit.errors import ParseError

from . import layout as L


@dataclass
class PageSet:
    """Pages of one or more CPUs laid out in one uint8 buffer (each page starting at a multiple of 4).

    Attributes:
        buf: the bytes; padded so that reading 8 bytes past any page stays inside.
        starts: byte offset of every page in ``buf``.
        cpu: CPU of every page; ``group``: buffer (instance) index of every page.
        where: (file offset of the CPU data, page index in it, compressed?) for error messages.
    """

    buf: np.ndarray
    starts: np.ndarray
    cpu: np.ndarray
    group: np.ndarray
    where: list[tuple[int, int, int, bool]] = field(default_factory=list)


@dataclass
class Records:
    """Every event record found, in per-page order (pages in ``PageSet`` order).

    Attributes:
        page: index of the record's page; ``data``: byte offset of its payload in the buffer; ``length``: payload
        bytes; ``ts``: raw timestamp (the clock's units, before TSC2NSEC/offsets).
        lost: per page, events the kernel reported lost (count, or -1 when the count was not stored; 0 = none).
        damage: one error per page that could not be decoded (its records are dropped, the rest kept).
        at: (from one range's walk, before :func:`walk` places them) each record's place in page order.
    """

    page: np.ndarray
    data: np.ndarray
    length: np.ndarray
    ts: np.ndarray
    lost: np.ndarray
    damage: list[ParseError]
    at: np.ndarray | None = None


def pageset_bytes(parts: list[tuple[int, int, list, int, bool]], page_size: int) -> int:
    """Bytes :func:`build_pageset` lays ``parts`` out in (whole pages, without the 16 bytes of padding)."""
    return sum(-(-sum(ch[2] for ch in chunks) // page_size) * page_size for _g, _c, chunks, _o, _z in parts)


def build_pageset(parts: list[tuple[int, int, list, int, bool]], page_size: int, path: str,
                  damage: list[ParseError], fill, dest: np.ndarray | None = None) -> PageSet:
    """Lay out per-CPU page data in one buffer, each CPU's pages copied (or decompressed) straight into place.

    Args:
        parts: ``(group, cpu, chunks, file offset, compressed)`` per CPU; ``chunks`` as sections.cpu_chunks gives.
        fill: ``fill(chunks, dest, compressed)`` copies/decompresses the chunks into ``dest``.
        dest: zeroed uint8 room of at least ``pageset_bytes(parts, page_size) + 16`` bytes to lay the pages out in
            (several buffers then share one allocation, never concatenated); default: a new array.

    A trailing partial page is reported in ``damage`` and skipped.
    """
    sizes = [sum(ch[2] for ch in chunks) for _g, _c, chunks, _o, _z in parts]
    padded = [-(-n // page_size) * page_size for n in sizes]
    buf = np.zeros(sum(padded) + 16, np.uint8) if dest is None else dest[:sum(padded) + 16]
    at = np.concatenate([[0], np.cumsum(padded)]).astype(np.int64) if padded else np.zeros(1, np.int64)

    def one(i: int) -> ParseError | None:
        try:
            fill(parts[i][2], buf[at[i]:at[i] + padded[i]], parts[i][4])
        except ParseError as exc:
            return exc
        return None

    # each CPU's chunks are decompressed/copied in their own thread (zstd and memcpy release the GIL)
    if len(parts) > 1:
        with ThreadPoolExecutor(2) as pool:
            errors = list(pool.map(one, range(len(parts))))
    else:
        errors = [one(i) for i in range(len(parts))]
    starts, cpus, groups = [], [], []
    where = []
    for i, ((g, cpu, _chunks, off, comp), n, room) in enumerate(zip(parts, sizes, padded, strict=True)):
        if errors[i] is not None:
            damage.append(errors[i])
            buf[at[i]:at[i] + room] = 0
            continue
        pos = int(at[i])
        whole = n // page_size
        if n % page_size:
            damage.append(ParseError(path, off + (0 if comp else whole * page_size),
                                     f"CPU {cpu} data made of whole {page_size}-byte pages",
                                     f"{n} bytes (a partial page of {n % page_size} bytes skipped)"))
            buf[pos + whole * page_size:pos + room] = 0
        starts.append(pos + np.arange(whole, dtype=np.int64) * page_size)
        cpus.append(np.full(whole, cpu, np.int32))
        groups.append(np.full(whole, g, np.int32))
        where.append((off, whole, cpu, comp))
    return PageSet(buf, _cat(starts, np.int64), _cat(cpus, np.int32), _cat(groups, np.int32), where)


def _cat(xs: list, dt) -> np.ndarray:
    return np.concatenate(xs) if xs else np.zeros(0, dt)


def _u64_at(u32: np.ndarray, off: np.ndarray, big: bool) -> np.ndarray:
    a = u32[off >> 2].astype(np.uint64)
    b = u32[(off >> 2) + 1].astype(np.uint64)
    return (a << np.uint64(32)) | b if big else a | (b << np.uint64(32))


def _page_error(ps: PageSet, page: int, page_size: int, path: str, what: str, found: str) -> ParseError:
    base = 0
    for off, n, cpu, comp in ps.where:
        if page < base + n:
            i = page - base
            if comp:
                return ParseError(path, off, f"{what} (CPU {cpu}, page {i} of the decompressed data)", found)
            return ParseError(path, off + i * page_size, f"{what} (CPU {cpu}, page {i})", found)
        base += n
    return ParseError(path, None, what, found)


def walk(ps: PageSet, page_size: int, long_size: int, big: bool, path: str, threads: int = 2) -> Records:
    """Decode every record header of every page; returns the event records and the lost-event flags.

    Each CPU's pages are walked in its own thread (numpy releases the GIL). A page whose commit or record headers
    are inconsistent costs only that page: it is recorded in ``Records.damage`` and its records are dropped.
    Records come in page order, each page's in ring order.
    """
    bounds, lo = [], 0
    for _off, n, _cpu, _comp in ps.where:
        bounds.append((lo, lo + n))
        lo += n
    if not bounds:
        bounds = [(0, len(ps.starts))]
    def one(b: tuple[int, int]) -> Records:
        return _walk_range(ps, b[0], b[1], page_size, long_size, big, path)

    if threads > 1 and len(bounds) > 1:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(one, bounds))
    else:
        parts = [one(b) for b in bounds]
    # every range's records put in page order straight into their slice of the joined columns
    total = sum(len(r.page) for r in parts)
    cols = [np.empty(total, x.dtype) for x in (parts[0].page, parts[0].data, parts[0].length, parts[0].ts)]
    base = np.cumsum([0] + [len(r.page) for r in parts])

    def place(i: int) -> None:
        r = parts[i]
        r.at += base[i]
        for c, k in enumerate(("page", "data", "length", "ts")):
            cols[c][r.at] = getattr(r, k)
            setattr(r, k, None)  # the walk-order copy freed as soon as it is placed
        r.at = None

    if threads > 1 and len(parts) > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(place, range(len(parts))))
    else:
        for i in range(len(parts)):
            place(i)
    return Records(*cols, np.concatenate([r.lost for r in parts]), [d for r in parts for d in r.damage])


def _walk_range(ps: PageSet, lo: int, hi: int, page_size: int, long_size: int, big: bool, path: str) -> Records:
    """:func:`walk` over pages ``lo:hi`` of ``ps`` (page indices in the result are global)."""
    u32 = ps.buf[: len(ps.buf) // 4 * 4].view(L.order(np.dtype("<u4"), big))
    starts = ps.starts[lo:hi]
    n = len(starts)
    hdr = 16 if long_size == 8 else 12
    dsize = page_size - hdr
    ts = _u64_at(u32, starts, big) if n else np.zeros(0, np.uint64)
    commit = (_u64_at(u32, starts + 8, big) if long_size == 8 else u32[(starts + 8) >> 2].astype(np.uint64)) \
        if n else np.zeros(0, np.uint64)
    size = (commit & np.uint64(L.COMMIT_MASK)).astype(np.int64)
    bad = size > dsize
    reason = {int(i): f"commit {int(size[i])} > {dsize} bytes of page data" for i in np.flatnonzero(bad)}
    dstart = starts + hdr
    # lost events: the count is stored after the last record when MISSING_STORED is set and there is room
    missing = (commit & np.uint64(L.MISSING_EVENTS)) != 0
    stored = missing & ((commit & np.uint64(L.MISSING_STORED)) != 0) & ~bad & (size + long_size <= dsize)
    lost = np.where(missing, -1, 0).astype(np.int64)
    if stored.any():
        at = dstart[stored] + ((size[stored] + 3) & ~3)
        vals = _u64_at(u32, at, big) if long_size == 8 else u32[at >> 2].astype(np.uint64)
        lost[stored] = vals.astype(np.int64)
    # carried per live page, compacted every step: page index, absolute offset of the next header, commit end,
    # running timestamp
    p = np.flatnonzero(~bad & (size > 0))
    off = dstart[p]
    end = off + size[p]
    cur = ts[p]
    nth = np.zeros(p.size, np.int32)  # records of each live page written so far: the next one's index in its page
    # every step advances each live page by at least one 4-byte header, so a page yields at most size/4 records:
    # the outputs are written in place into arrays of that bound (untouched pages of np.empty cost no memory),
    # instead of hundreds of per-step pieces that fragment the heap and are concatenated at the end
    cap = int(size[p].sum()) // 4 + 1
    out_page = np.empty(cap, np.int32)
    out_nth = np.empty(cap, np.int32)
    out_data = np.empty(cap, np.int64)
    out_len = np.empty(cap, np.int32)
    out_ts = np.empty(cap, np.uint64)
    k = 0
    shift = np.uint64(L.TS_SHIFT)
    last_word = len(u32) - 1
    while p.size:
        w = u32[off >> 2]
        if big:
            tl, delta = (w >> 27).astype(np.int64), (w & 0x7FFFFFF).astype(np.uint64)
        else:
            tl, delta = (w & 31).astype(np.int64), (w >> 5).astype(np.uint64)
        # the common case, a data record with its length in type_len: payload at +4, 4*type_len bytes
        dlen = tl * 4
        doff = off + 4
        is_ev = tl <= L.TYPE_LEN_DATA_MAX
        cur = cur + delta
        rare = np.flatnonzero((tl == 0) | (tl > L.TYPE_LEN_DATA_MAX))
        broken = None
        if rare.size:
            t = tl[rare]
            o = off[rare]
            room = o + 8 <= end[rare] + 4 * (t != 0)
            arr0 = np.where(room, u32[np.minimum((o >> 2) + 1, last_word)], 0).astype(np.int64)
            ext = (arr0.astype(np.uint64) << shift) + delta[rare]
            prev = cur[rare] - delta[rare]
            cur[rare] = np.where(t == L.TYPE_TIME_STAMP, ext | (prev & L.TS_MSB),
                                 np.where(t == L.TYPE_TIME_EXTEND, prev + ext, prev + delta[rare]))
            # kbuffer-parse.c translate_data(): type_len 0 keeps its length in array[0] (payload at +8); padding
            # skips array[0] bytes after the header word; time extend/stamp records are 8 bytes long
            dlen[rare] = np.where(t == 0, ((arr0 - 4) + 3) & ~3, np.where(t == L.TYPE_PADDING, arr0, 0))
            doff[rare] = o + np.where(t == L.TYPE_PADDING, 4, 8)
            bad_r = ~room | ((t == 0) & (arr0 < 4)) | ((t == L.TYPE_PADDING) & (arr0 & 3 != 0))
            if bad_r.any():
                broken = np.zeros(p.size, bool)
                broken[rare[bad_r]] = True
        nxt = doff + dlen
        over = is_ev & (nxt > end)
        if over.any():
            broken = over if broken is None else broken | over
        if broken is not None:
            for i, at in zip(p[broken], off[broken], strict=True):
                reason.setdefault(int(i), f"a record at page offset {int(at - starts[i])} running past the commit "
                                          f"({int(size[i])})")
            bad[p[broken]] = True
            ok = is_ev & ~broken
        else:
            ok = is_ev
        if rare.size or broken is not None:
            sel = np.flatnonzero(ok)
            m = sel.size
            np.add(p[sel], lo, out=out_page[k:k + m], casting="unsafe")
            np.take(doff, sel, out=out_data[k:k + m])
            out_len[k:k + m] = dlen[sel]
            np.take(cur, sel, out=out_ts[k:k + m])
            np.take(nth, sel, out=out_nth[k:k + m])
            nth += ok
        else:  # every live page read a data record: copied as they are
            m = p.size
            np.add(p, lo, out=out_page[k:k + m], casting="unsafe")
            out_data[k:k + m] = doff
            out_len[k:k + m] = dlen
            out_ts[k:k + m] = cur
            out_nth[k:k + m] = nth
            nth += 1
        k += m
        keep = nxt < end
        if broken is not None:
            keep &= ~broken
        p, off, end, cur, nth = p[keep], nxt[keep], end[keep], cur[keep], nth[keep]
    page, data, length, rts, nth = out_page[:k], out_data[:k], out_len[:k], out_ts[:k], out_nth[:k]
    del out_page, out_data, out_len, out_ts, out_nth  # the views keep them alive until the page-order moves below
    if reason:
        drop = bad[page - lo]
        page, data, length, rts, nth = page[~drop], data[~drop], length[~drop], rts[~drop], nth[~drop]
    # records come out step by step (every page's first, then every page's second, ...): put in page order
    # without a sort, a record's place being its page's first place plus its index in the page
    local = page - lo
    counts = np.bincount(local, minlength=hi - lo)
    at = (np.cumsum(counts) - counts)[local] + nth
    del local, counts, nth
    damage = [_page_error(ps, i + lo, page_size, path, "a valid ring-buffer page", r)
              for i, r in sorted(reason.items())]
    lost[bad] = 0
    # the caller places the records (``at``: each one's place in page order within this range)
    return Records(page, data, length, rts, lost, damage, at)
