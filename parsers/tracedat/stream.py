"""trace.dat (v6/v7, trace-cmd.dat.v6(5)/v7(5)) read in bounded batches of ring-buffer pages.

The same decoding as :func:`tracekit.parsers.tracedat.read` (``build_pageset``, ``walk``, ``_frame`` are called as
they are), but one CPU's pages at a time, ``batch_pages`` pages per step, so memory holds one batch, not the file.
Frames come out per (buffer, CPU, batch): rows of one batch are in ``ts`` order (a CPU's pages are), batches of one
CPU follow each other in time, and different CPUs overlap in time (the caller merges them).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from tracekit.errors import ParseError, UnsupportedFormatError
from tracekit.formats import EventFormat
from tracekit.model import LOST_MARKS_SCHEMA, Trace
from tracekit.symbols import Kallsyms

from . import _context, _lost_frame, _lost_marks, _to_ns
from .frames import _frame, _State
from .pages import build_pageset, walk
from .sections import Blob, cpu_chunks, drop_pages, fill_chunks

__all__ = ["StreamHeader", "open_stream", "BATCH_PAGES"]

BATCH_PAGES = 256
"""Pages decoded per step (1 MiB with 4 KiB pages)."""


@dataclass
class StreamHeader:
    """What a streamed trace.dat says about itself; ``lost_rows`` and ``damage`` fill up while batches are read.

    Call :meth:`trace` after the batches to get a frame-less Trace with the metadata, formats, lost events,
    kallsyms, cmdlines and damage (for a manifest)."""

    path: str
    metadata: dict
    formats: dict[str, EventFormat]
    kallsyms: Kallsyms | None
    tables: dict[str, pl.DataFrame]
    buffers: list
    damage: list[ParseError] = field(default_factory=list)
    lost_rows: list = field(default_factory=list)
    marks: list = field(default_factory=list)

    def trace(self) -> Trace:
        tables = dict(self.tables)
        marks = pl.concat(self.marks) if self.marks else pl.DataFrame(schema={**LOST_MARKS_SCHEMA, "g": pl.Int16})
        if len(self.buffers) > 1:
            names = pl.Series([b.name for b in self.buffers], dtype=pl.String)
            marks = marks.with_columns(buffer=names.gather(marks["g"]))
        tables["lost_marks"] = marks.drop("g")
        return Trace(source=self.path, format="trace.dat", frames={}, metadata=self.metadata, formats=self.formats,
                     lost_events=_lost_frame(self.lost_rows, self.buffers), kallsyms=self.kallsyms,
                     damage=self.damage, tables=tables)


def _split(chunks: list[tuple[int, int, int]], compressed: bool, page_size: int, batch_pages: int) -> list[list]:
    """``chunks`` of one CPU cut into batches of about ``batch_pages`` pages (uncompressed data is cut at page
    boundaries; compressed chunks are grouped whole)."""
    limit = batch_pages * page_size
    if not compressed:
        out = []
        for off, size, _u in chunks:
            for at in range(0, size, limit):
                n = min(limit, size - at)
                out.append([(off + at, n, n)])
        return out
    out, cur, cur_n = [], [], 0
    for ch in chunks:
        cur.append(ch)
        cur_n += ch[2]
        if cur_n >= limit:
            out.append(cur)
            cur, cur_n = [], 0
    if cur:
        out.append(cur)
    return out


class _Pread:
    """The file read by offset (``os.pread``) where the section readers index a buffer: a CPU's chunk headers are
    read without faulting in (and counting in RSS) every page of the map they lie on."""

    def __init__(self, fd: int, size: int):
        self.fd, self.size = fd, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, s: slice) -> bytes:
        return os.pread(self.fd, max(0, min(s.stop, self.size) - s.start), s.start)


def open_stream(source: str | os.PathLike, *, buffer: str | None = None, batch_pages: int = BATCH_PAGES
                ) -> tuple[StreamHeader, Iterator[tuple[str, pl.DataFrame]]]:
    """Open a trace.dat for batched reading.

    Returns:
        ``(header, batches)``: ``batches`` yields ``(system:event, frame)`` per event per batch of pages.

    Raises:
        UnsupportedFormatError / ParseError: as :func:`tracekit.parsers.tracedat.read` for the file's metadata.
    """
    path = os.fspath(source)
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise UnsupportedFormatError(path, "empty file: expected a trace.dat", 0)
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise ParseError(path, None, "a readable file", exc.strerror) from exc
    ctx = _context(mm, path, buffer)
    info, md, long_size, index, kallsyms, printk = ctx.info, ctx.md, ctx.long_size, ctx.index, ctx.kallsyms, ctx.printk
    pids, comms, tables, buffers = ctx.pids, ctx.comms, ctx.tables, ctx.buffers
    header = StreamHeader(path, md, index.by_name(), kallsyms, tables, buffers)
    blob = Blob(mm, path, info.big_endian)
    drop_pages(mm, 0, len(mm))  # the header sections, parsed
    fd = os.open(path, os.O_RDONLY)
    heads = Blob(_Pread(fd, len(mm)), path, info.big_endian)

    def batches() -> Iterator[tuple[str, pl.DataFrame]]:
        try:
            yield from _batches()
        finally:
            os.close(fd)

    def _batches() -> Iterator[tuple[str, pl.DataFrame]]:
        for g, b in enumerate(buffers):
            page_size = b.page_size or info.page_size
            for c in b.cpus:
                try:
                    chunks = cpu_chunks(heads, info, b, c)
                except ParseError as exc:
                    header.damage.append(exc)
                    continue
                carry = None  # ts of the last event of this CPU's previous batches (prev_ts of a loss mark)
                for part in _split(chunks, b.compressed, page_size, batch_pages):
                    ps = build_pageset([(g, c.cpu, part, part[0][0], b.compressed)], page_size, path,
                                       header.damage, lambda ch, dest, z: fill_chunks(blob, info, ch, dest, z))
                    # the whole map after each batch: pages a decoder touched outside the batch's chunks go too
                    # (on /work/big/big_v7_zstd.dat 22 MB; the batch phase's peak RSS 137 -> 115 MiB)
                    drop_pages(mm, 0, len(mm))
                    recs = walk(ps, page_size, long_size, info.big_endian, path, threads=1)
                    header.damage.extend(recs.damage)
                    if recs.lost.any():  # pages that lost nothing add nothing: kept per lossy page only
                        lossy = recs.lost != 0
                        header.lost_rows.append((ps.cpu[lossy], ps.group[lossy], recs.lost[lossy]))
                        marks = _lost_marks(ps, recs, md, info.big_endian)
                        if carry is not None:
                            marks = marks.with_columns(pl.col("prev_ts").fill_null(carry))
                        header.marks.append(marks)
                    if len(recs.ts):
                        carry = int(_to_ns(recs.ts[-1:], md)[0])
                    yield from _frames(ps, recs, md, info.big_endian, long_size, pids, comms, buffers, kallsyms,
                                       printk, index, header.damage, path)

    return header, batches()


def _frames(ps, recs, md, big, long_size, pids, comms, buffers, kallsyms, printk, index, damage, path):
    if not len(recs.data):
        return
    u32 = ps.buf[: len(ps.buf) // 4 * 4].view(">u4" if big else "<u4")
    word = u32[recs.data >> 2]
    ids = ((word >> 16) if big else (word & 0xFFFF)).astype(np.uint16)
    ids[recs.length < 2] = 0xFFFF
    ts = _to_ns(recs.ts, md)
    cpu = ps.cpu[recs.page].astype(np.int16)
    group = ps.group[recs.page].astype(np.int16)
    st = _State(path, ps.buf, big, long_size, pids, comms, [b.name for b in buffers], kallsyms, printk)
    for eid in np.unique(ids):
        sel = np.flatnonzero(ids == eid)
        fmt = index.parse(int(eid), damage)
        if fmt is None:
            damage.append(ParseError(path, None, "records whose common_type has an event format",
                                     f"{len(sel)} records of unknown type {int(eid)}"))
            continue
        order = sel[np.argsort(ts[sel], kind="stable")]
        yield fmt.full_name, _frame(st, fmt, recs.data[order], recs.length[order], ts[order], cpu[order],
                                    group[order])
