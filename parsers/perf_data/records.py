"""perf.data record streams: a vectorised walk over ``perf_event_header`` sizes, zstd-compressed records, and the
non-sample records as tables. Spec: ``perf.data-file-format.txt`` and ``perf_event.h`` (Linux 6.x).

Finding where each record starts needs the size of the one before it. Instead of a per-record loop the stream is
cut into chunks and every chunk is walked at once, in lockstep, from its (guessed) first byte. A walk started
mid-record soon lands on a true record boundary and follows the true chain from there on (the "Kruskal count"
effect), so each chunk is checked against the exit of the chunk before it and only the few that never met the
true chain are walked again from their true entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import polars as pl
import zstandard

from tracekit.errors import ParseError, TruncatedError

from . import layout as L

_CHUNK = 4096
_PAD = 64  # zero bytes after the stream so header reads near the end stay in bounds


@dataclass
class Stream:
    """A run of records in one buffer.

    Attributes:
        buf: the bytes as uint8, followed by ``_PAD`` zero bytes (``len(buf) - _PAD`` is the real length).
        path: the file the bytes come from.
        base: file offset of ``buf[0]``, or None for a decompressed stream (then ``origin`` names the record).
        big: the writer was big-endian.
        origin: where a decompressed stream came from, for messages.
    """

    buf: np.ndarray
    path: str
    base: int | None
    big: bool
    origin: str = ""

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, path, base: int | None, big: bool, origin: str = "") -> Stream:
        buf = np.zeros(len(data) + _PAD, dtype=np.uint8)
        buf[: len(data)] = np.frombuffer(data, dtype=np.uint8)
        return cls(buf, os.fspath(path), base, big, origin)

    @property
    def size(self) -> int:
        return len(self.buf) - _PAD

    def where(self, off: int) -> int | None:
        return None if self.base is None else self.base + off

    def error(self, off: int, expected: str, found: object = None, cls=ParseError) -> ParseError:
        if self.base is None:
            expected = f"{expected} ({self.origin}, decompressed byte {off:#x})"
        return cls(self.path, self.where(off), expected, found)

    # -- vectorised reads ---------------------------------------------------------------------------------------
    def u8(self, offs: np.ndarray) -> np.ndarray:
        return self.buf[offs]

    def u16(self, offs: np.ndarray) -> np.ndarray:
        offs = np.asarray(offs, dtype=np.int64)
        if len(offs) and not (offs & 1).any():
            return self._view(2)[offs >> 1]
        a, b = self.buf[offs].astype(np.uint16), self.buf[offs + 1].astype(np.uint16)
        return (a << 8) | b if self.big else a | (b << 8)

    def u32(self, offs: np.ndarray) -> np.ndarray:
        offs = np.asarray(offs, dtype=np.int64)
        if len(offs) and not (offs & 3).any():
            return self._view(4)[offs >> 2]
        b = [self.buf[offs + i].astype(np.uint32) for i in range(4)]
        if self.big:
            b.reverse()
        return b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)

    def _view(self, size: int) -> np.ndarray:
        n = len(self.buf) // size * size
        v = self.buf[:n].view(f"{'>' if self.big else '<'}u{size}")
        return v.astype(f"=u{size}") if self.big else v

    def u64(self, offs: np.ndarray) -> np.ndarray:
        offs = np.asarray(offs, dtype=np.int64)
        if len(offs) and not (offs & 7).any():
            return self.words()[offs >> 3]
        g = self.buf[offs[:, None] + np.arange(8)]
        return np.ascontiguousarray(g).view(">u8" if self.big else "<u8")[:, 0].astype(np.uint64)

    def words(self) -> np.ndarray:
        n = len(self.buf) // 8 * 8
        w = self.buf[:n].view(">u8" if self.big else "<u8")
        return w.astype(np.uint64) if self.big else w

    def struct(self, offs: np.ndarray, dt: np.ndarray) -> np.ndarray:
        """Records of dtype ``dt`` (in this stream's byte order) at each offset, as a structured array."""
        dt = L.order(dt, self.big)
        if dt.itemsize == 0:
            return np.zeros(len(offs), dtype=dt)
        g = self.buf[np.asarray(offs, dtype=np.int64)[:, None] + np.arange(dt.itemsize)]
        return np.ascontiguousarray(g).view(dt)[:, 0]

    def record_sizes(self, pos: np.ndarray, typ: np.ndarray | None = None,
                     size: np.ndarray | None = None) -> np.ndarray:
        """The byte length of the record at each offset, including the payload some user records carry after
        their header's size (tracing data in pipe mode, AUXTRACE); ``typ`` and ``size`` (int64 header fields)
        are read from the stream unless given."""
        size = self.u16(pos + 6).astype(np.int64) if size is None else size
        typ = self.u32(pos) if typ is None else typ
        extra = np.zeros(len(pos), dtype=np.int64)
        tr = typ == L.T["HEADER_TRACING_DATA"]
        if tr.any():
            n = self.u32(pos[tr] + 8).astype(np.int64)
            extra[tr] = (n + 7) // 8 * 8
        ax = typ == L.T["AUXTRACE"]
        if ax.any():
            extra[ax] = np.minimum(self.u64(pos[ax] + 8), np.uint64(1 << 40)).astype(np.int64)
        return size + extra

    def plausible(self, pos: np.ndarray, aligned: bool = True, typ: np.ndarray | None = None,
                  raw: np.ndarray | None = None) -> np.ndarray:
        """Whether a record header at each offset looks like one perf writes: a known type and a size of 8 or
        more (a multiple of 8 for an ``aligned`` stream; compressed records are not padded); ``typ`` and ``raw``
        (int64 header fields) are read from the stream unless given."""
        typ = self.u32(pos).astype(np.int64) if typ is None else typ
        raw = self.u16(pos + 6).astype(np.int64) if raw is None else raw
        ok = _KNOWN[np.minimum(typ, len(_KNOWN) - 1)] & (raw >= 8)
        return ok & ((raw & 7) == 0) if aligned else ok

    def step_at(self, pos: np.ndarray) -> np.ndarray:
        """For 8-byte aligned offsets: the record size if a plausible header starts there, else 8."""
        w = self.words()[pos >> 3]
        if self.big:
            typ, size = w >> np.uint64(32), (w & np.uint64(0xFFFF)).astype(np.int64)
        else:
            typ, size = w & np.uint64(0xFFFFFFFF), (w >> np.uint64(48)).astype(np.int64)
        ok = (_KNOWN[np.minimum(typ, np.uint64(len(_KNOWN) - 1)).astype(np.int64)] & (size >= 8)
              & ((size & 7) == 0))
        step = np.where(ok, size, 8)
        special = ok & ((typ == L.T["HEADER_TRACING_DATA"]) | (typ == L.T["AUXTRACE"]))
        if special.any():
            step[special] = self.record_sizes(pos[special])
        return step

    def steps(self, aligned: bool = True) -> np.ndarray:
        """For every 8-byte word (``aligned``) or every byte of the stream: the record size if a plausible header
        starts there, else the granule (8 or 1)."""
        if aligned:
            w = self.words()[: (self.size + 7) // 8]
            if self.big:
                typ, size = w >> np.uint64(32), (w & np.uint64(0xFFFF)).astype(np.int64)
            else:
                typ, size = w & np.uint64(0xFFFFFFFF), (w >> np.uint64(48)).astype(np.int64)
            ok = (_KNOWN[np.minimum(typ, np.uint64(len(_KNOWN) - 1)).astype(np.int64)] & (size >= 8)
                  & ((size & 7) == 0))
            step = np.where(ok, size, 8)
            at = np.arange(len(step), dtype=np.int64) * 8
        else:
            b = self.buf.astype(np.int64)
            n = self.size
            if self.big:
                typ = (b[:n] << 24) | (b[1:n + 1] << 16) | (b[2:n + 2] << 8) | b[3:n + 3]
                size = (b[6:n + 6] << 8) | b[7:n + 7]
            else:
                typ = b[:n] | (b[1:n + 1] << 8) | (b[2:n + 2] << 16) | (b[3:n + 3] << 24)
                size = b[6:n + 6] | (b[7:n + 7] << 8)
            ok = _KNOWN[np.minimum(typ, len(_KNOWN) - 1)] & (size >= 8)
            step = np.where(ok, size, 1)
            at = np.arange(n, dtype=np.int64)
        special = np.nonzero(ok & ((typ == L.T["HEADER_TRACING_DATA"]) | (typ == L.T["AUXTRACE"])))[0]
        if len(special):
            step[special] = self.record_sizes(at[special])
        return step


_KNOWN = np.zeros(L.T["COMPRESSED2"] + 2, dtype=bool)
_KNOWN[list(L.RECORD_TYPES)] = True


def _lockstep(step, starts: np.ndarray, ends: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Walk every chunk ``[starts[i], ends[i])`` at once, ``step(offsets)`` giving the size of the record at each
    offset; returns the visited offsets (one (chunk, offset) array per step) and each chunk's exit offset."""
    cur = starts.astype(np.int64).copy()
    active = np.nonzero(cur < ends)[0]
    out: list[np.ndarray] = []
    while len(active):
        p = cur[active]
        out.append(np.stack([active, p]))
        cur[active] = p + step(p)
        active = active[cur[active] < ends[active]]
    return out, cur


def walk(stream: Stream, start: int = 0, end: int | None = None) -> tuple[np.ndarray, ParseError | None]:
    """Offsets of every record in ``stream[start:end]`` (see :func:`_walk`); a stream holding unpadded records
    (compressed, pipe-mode features) is walked again byte by byte."""
    pos, dmg = _walk(stream, start, end, True)
    if dmg is not None and dmg.offset is not None and stream.base is not None:
        p = np.array([dmg.offset - stream.base])
        if stream.plausible(p, aligned=False)[0] and not stream.plausible(p)[0]:
            return _walk(stream, start, end, False)  # unpadded records (compressed, pipe-mode features)
    return pos, dmg


def _walk(stream: Stream, start: int, end: int | None, aligned: bool) -> tuple[np.ndarray, ParseError | None]:
    """Offsets of every record in ``stream[start:end]``, in order, and the damage that stopped the walk (or None).

    Records before the damage are all returned; a record whose header is impossible (size below 8, a type beyond
    any perf knows) or that runs past the end stops the walk there.
    """
    end = stream.size if end is None else min(end, stream.size)
    if end - start < 8:
        dmg = None if end == start else stream.error(start, "a perf_event_header (8 bytes)", f"{end - start} bytes",
                                                     TruncatedError)
        return np.zeros(0, dtype=np.int64), dmg
    shift = 3 if aligned else 0
    if start & 7 and aligned:
        raise ValueError("record streams start 8-byte aligned")
    if aligned:
        step = stream.step_at
    else:
        table = stream.steps(False)

        def step(p: np.ndarray) -> np.ndarray:
            return table[p]
    nchunks = max(1, (end - start) // _CHUNK)
    starts = start + (np.arange(nchunks, dtype=np.int64) * ((end - start) // nchunks)) >> shift << shift
    ends = np.append(starts[1:], end)
    steps, walk_exits = _lockstep(step, starts, ends)
    exits = walk_exits.copy()
    allv = np.concatenate(steps, axis=1) if steps else np.zeros((2, 0), dtype=np.int64)
    order = np.argsort(allv[1], kind="stable")
    chunk_of, pos = allv[0][order], allv[1][order]
    # fixpoint: a chunk is right when the exit of the chunk before it is one of its visited offsets
    entry = np.empty(nchunks, dtype=np.int64)
    for _ in range(2 * nchunks + 2):
        entry[0] = start
        entry[1:] = exits[:-1]
        hit = np.searchsorted(pos, entry)
        found = (hit < len(pos)) & (pos[np.minimum(hit, len(pos) - 1)] == entry) if len(pos) else \
            np.zeros(nchunks, bool)
        spanned = entry >= ends  # a record covers the whole chunk: the chain leaves it where it entered
        new_exits = np.where(spanned, entry, walk_exits)
        moved = (new_exits != exits).any()
        exits = new_exits
        ok = found | spanned | (entry == starts)
        bad = np.nonzero(~ok)[0]
        if not len(bad):
            if moved:
                continue
            break
        redo = bad  # a redone chunk may move the entry of the next one: the loop runs until nothing changes
        s2, e2 = _lockstep(step, entry[redo], ends[redo])
        keep = ~np.isin(chunk_of, redo)
        new = np.concatenate(s2, axis=1) if s2 else np.zeros((2, 0), dtype=np.int64)
        chunk_of = np.concatenate([chunk_of[keep], redo[new[0]]])
        pos = np.concatenate([pos[keep], new[1]])
        o = np.argsort(pos, kind="stable")
        chunk_of, pos = chunk_of[o], pos[o]
        walk_exits[redo] = e2
        exits = np.where(entry >= ends, entry, walk_exits)
        starts = starts.copy()
        starts[redo] = entry[redo]
    # drop each chunk's offsets before its true entry
    entry_of = entry[chunk_of]
    pos = pos[pos >= entry_of]
    # validate the chain: sizes, types, the end
    raw_sizes = stream.u16(pos + 6).astype(np.int64)  # each header field read once for the checks below
    types = stream.u32(pos).astype(np.int64)
    sizes = stream.record_sizes(pos, types, raw_sizes)
    bad = ~stream.plausible(pos, aligned, types, raw_sizes) | (pos + sizes > end)
    dmg = None
    if bad.any():
        i = int(np.argmax(bad))
        p = int(pos[i])
        if pos[i] + sizes[i] > end and raw_sizes[i] >= 8:
            dmg = stream.error(p, f"a record of {int(sizes[i])} bytes (type {int(types[i])})",
                               f"{end - p} bytes left", TruncatedError)
        else:
            dmg = stream.error(p, "a perf_event_header with a known type and a size that is a multiple of 8",
                               f"type {int(types[i])} size {int(raw_sizes[i])}")
        pos = pos[:i]
    return pos, dmg


def decompress(stream: Stream, pos: np.ndarray, types: np.ndarray, dctx: zstandard.ZstdDecompressor,
               damage: list) -> Stream | None:
    """The records inside every PERF_RECORD_COMPRESSED(2) at ``pos``, as one stream (records may straddle two
    compressed records, so their payloads are decompressed as one zstd stream)."""
    sel = np.isin(types, (L.T["COMPRESSED"], L.T["COMPRESSED2"]))
    if not sel.any():
        return None
    cpos = pos[sel]
    ctyp = types[sel]
    csize = stream.u16(cpos + 6).astype(np.int64)
    start = cpos + 8
    length = csize - 8
    is2 = ctyp == L.T["COMPRESSED2"]
    if is2.any():  # COMPRESSED2 carries the payload length; the record is padded to 8 bytes
        start[is2] = cpos[is2] + 16
        length[is2] = np.minimum(stream.u64(cpos[is2] + 8).astype(np.int64), csize[is2] - 16)
    mv = stream.buf.data
    payload = b"".join(bytes(mv[s:s + n]) for s, n in zip(start.tolist(), length.tolist(), strict=True))
    out = bytearray()
    try:
        with dctx.stream_reader(payload, read_across_frames=True) as r:
            while True:
                piece = r.read(1 << 24)
                if not piece:
                    break
                out += piece
                if len(out) > 1 << 36:
                    raise zstandard.ZstdError("decompressed size beyond 64 GiB")
    except zstandard.ZstdError as exc:
        damage.append(stream.error(int(cpos[0]), "zstd data in PERF_RECORD_COMPRESSED", str(exc)))
    first = stream.where(int(cpos[0]))
    origin = f"PERF_RECORD_COMPRESSED records from {first:#x}" if first is not None else "compressed records"
    return Stream.from_bytes(bytes(out), stream.path, None, stream.big, origin)


# -- non-sample records as tables ------------------------------------------------------------------------------
def sample_id_size(sample_type: int) -> int:
    """Bytes of the ``sample_id`` trailer (``sample_id_all``) for a sample_type."""
    return 8 * sum(1 for bit in L.SAMPLE_ID_FIELDS if sample_type & L.S[bit])


def sample_id_columns(stream: Stream, pos: np.ndarray, ends: np.ndarray, sample_type: int) -> dict[str, np.ndarray]:
    """The ``sample_id`` trailer fields (pid, tid, time, id, stream_id, cpu) of records ending at ``ends``."""
    cur = ends - sample_id_size(sample_type)
    out: dict[str, np.ndarray] = {}
    for bit in L.SAMPLE_ID_FIELDS:
        if not sample_type & L.S[bit]:
            continue
        w = stream.u64(cur)
        if bit == "TID":
            first, second = _split(w, stream.big)
            out["pid"], out["tid"] = first.astype(np.int32), second.astype(np.int32)
        elif bit == "CPU":
            out["cpu"] = _split(w, stream.big)[0].astype(np.int32)
        elif bit == "TIME":
            out["ts"] = w.astype(np.int64)
        else:
            out["id" if bit == "IDENTIFIER" else bit.lower()] = w
        cur = cur + 8
    return out


def _split(w: np.ndarray, big: bool) -> tuple[np.ndarray, np.ndarray]:
    """The two u32 of each u64 word, in file order."""
    lo, hi = (w & np.uint64(0xFFFFFFFF)).astype(np.uint32), (w >> np.uint64(32)).astype(np.uint32)
    return (hi, lo) if big else (lo, hi)


def _strings(stream: Stream, starts: np.ndarray, ends: np.ndarray) -> list[str]:
    mv = stream.buf.data
    return [bytes(mv[s:e]).split(b"\0", 1)[0].decode("utf-8", "replace")
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def record_tables(stream: Stream, pos: np.ndarray, types: np.ndarray, sample_type: int,
                  sample_id_all: bool) -> dict[str, pl.DataFrame]:
    """One frame per non-sample record type present (``comm``, ``mmap2``, ``lost``, ``throttle`` …) with the
    record's fields, its file ``offset`` (null inside compressed data) and the ``sample_id`` fields."""
    out: dict[str, pl.DataFrame] = {}
    sizes = stream.u16(pos + 6).astype(np.int64)
    for typ in np.unique(types).tolist():
        if typ == L.T["SAMPLE"] or typ not in L.RECORD_BODIES:
            continue
        sel = types == typ
        p, end = pos[sel], pos[sel] + sizes[sel]
        dt = L.RECORD_BODIES[typ]
        body = stream.struct(p + 8, dt)
        cols: dict[str, object] = {}
        for name in dt.names or ():
            v = body[name]
            if v.ndim > 1:
                cols[name] = [bytes(r).hex() for r in v]
            else:
                cols[name] = v.astype(v.dtype.newbyteorder("="))
        kernel_rec = typ < 64
        id_end = end
        if kernel_rec and sample_id_all and typ not in (L.T["FINISHED_ROUND"],):
            ids = sample_id_columns(stream, p, end, sample_type)
            for k, v in ids.items():
                cols[k if k not in cols else f"sample_{k}"] = v
            id_end = end - sample_id_size(sample_type)
        if typ in L.RECORD_STRINGS:
            first = p + 8 + dt.itemsize
            cols[L.RECORD_STRINGS[typ]] = _strings(stream, first, np.maximum(id_end, first))
        if typ in (L.T["SWITCH"], L.T["SWITCH_CPU_WIDE"]):
            cols["out"] = (stream.u16(p + 4) & 0x2000) != 0  # PERF_RECORD_MISC_SWITCH_OUT
        cols["misc"] = stream.u16(p + 4)
        cols["offset"] = pl.Series("offset", p + stream.base if stream.base is not None else [None] * len(p),
                                   dtype=pl.Int64)
        df = pl.DataFrame(cols)
        out[L.RECORD_TYPES[typ]] = df
    return out
