"""Column-wise extraction of event fields from ring-buffer record payloads.

Implements the field layout of Linux ``events/<system>/<event>/format`` files (offset/size/signed per field,
``__data_loc``/``__rel_loc`` locators, flexible arrays) as libtraceevent reads them. Every field is one numpy
gather over all records of an event; no Python loop per event.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tracekit.formats import EventFormat, Field

_ROW_CHUNK = 1 << 20
_MAX_STR = 1 << 16


class Payloads:
    """The records of one event: ``buf`` (uint8), payload offsets ``off`` and lengths ``length``."""

    def __init__(self, buf: np.ndarray, off: np.ndarray, length: np.ndarray, big: bool, long_size: int,
                 width: int = 0, direct: frozenset = frozenset()):
        self._length = length.astype(np.int64)
        self.big = big
        self.long_size = long_size
        u32 = buf[: len(buf) // 4 * 4].view(">u4" if big else "<u4")
        # fixed arrays named in ``direct`` (4-byte aligned, 4/8-byte elements, past ``width``) are gathered from the
        # page buffer straight into their final matrix, so the record block needs not hold them
        self.direct = direct
        self.src = (buf[: len(buf) // 4 * 4].view(np.uint32), off)
        if width and len(off):
            # gather every record (4-byte aligned) into one row of a compact block once: the field gathers
            # below then read memory in order instead of jumping across the whole page buffer per field
            words = min(-(-width // 4) + 1, 1 << 14)
            block = np.empty((len(off), words), u32.dtype)
            cols = np.arange(words, dtype=np.int64)
            step = max(1, (_ROW_CHUNK * 8) // words)
            for lo in range(0, len(off), step):
                idx = (off[lo:lo + step] >> 2)[:, None] + cols
                np.take(u32, idx, out=block[lo:lo + step], mode="clip")
            buf = block.view(np.uint8).ravel()
            off = np.arange(len(off), dtype=np.int64) * (words * 4)
            u32 = block.ravel()
            self.block = block
        else:
            self.block = None
        self.buf = buf
        self.off = off
        self.last = len(buf) - 1
        self.u32 = u32
        self.u16 = buf[: len(buf) // 2 * 2].view(">u2" if big else "<u2")

    @classmethod
    def from_block(cls, block: np.ndarray, length: np.ndarray | int, big: bool, long_size: int) -> Payloads:
        """The records already laid out one per row of ``block`` ((rows, words) uint32, C-contiguous); ``length``
        their payload bytes (an int when all are equal)."""
        self = cls.__new__(cls)
        self._length = length if np.isscalar(length) else length.astype(np.int64)
        self.big = big
        self.long_size = long_size
        self.direct = frozenset()
        self.src = None
        self.block = block
        self.buf = block.view(np.uint8).reshape(-1)
        self.off = np.arange(block.shape[0], dtype=np.int64) * (block.shape[1] * 4)
        self.u32 = block.reshape(-1).view(">u4" if big else "<u4")
        self.u16 = self.buf.view(">u2" if big else "<u2")
        self.last = len(self.buf) - 1
        return self

    @property
    def length(self) -> np.ndarray:
        """Payload bytes of every record (int64)."""
        if np.isscalar(self._length):
            self._length = np.full(len(self.off), self._length, np.int64)
        return self._length

    def drop_block(self) -> None:
        """Free the record block once every field it holds is read (only ``direct`` fields remain)."""
        if self.block is not None:
            self.block = self.buf = self.u32 = self.u16 = None

    def uint(self, rel: int | np.ndarray, size: int) -> np.ndarray:
        """Unsigned ints of ``size`` bytes at payload offset ``rel`` (a constant or per row) of every record."""
        const = np.isscalar(rel)
        blk = self.block
        if const and blk is not None and rel + size <= blk.shape[1] * 4:
            return self._column(blk, int(rel), size)
        off = self.off + rel
        off = np.clip(off, 0, max(self.last - size, 0))
        if size == 1:
            return self.buf[off]
        if size == 2 and const and rel % 2 == 0:
            return self.u16[off >> 1]
        if size == 4 and const and rel % 4 == 0:
            return self.u32[off >> 2]
        if size == 8 and const and rel % 4 == 0:
            a = self.u32[off >> 2].astype(np.uint64)
            b = self.u32[(off >> 2) + 1].astype(np.uint64)
            return (a << np.uint64(32)) | b if self.big else a | (b << np.uint64(32))
        acc = np.zeros(len(off), np.uint64)
        for k in range(size):
            byte = self.buf[off + k].astype(np.uint64)
            acc |= byte << np.uint64(8 * (size - 1 - k if self.big else k))
        return acc.astype({1: np.uint8, 2: np.uint16, 4: np.uint32}.get(size, np.uint64))

    def _column(self, blk: np.ndarray, rel: int, size: int) -> np.ndarray:
        """One field of every record, copied out of the record block in one strided pass (any alignment)."""
        b8 = blk.view(np.uint8)
        if size == 1:
            return b8[:, rel]
        if size not in (2, 4, 8):
            acc = np.zeros(blk.shape[0], np.uint64)
            for k in range(size):
                acc |= b8[:, rel + k].astype(np.uint64) << np.uint64(8 * (size - 1 - k if self.big else k))
            return acc
        order = ">" if self.big else "<"
        if rel % size == 0 and (blk.shape[1] * 4) % size == 0:
            # aligned: one strided pass over a typed view (a byte-matrix copy costs a loop per row)
            col = blk.view(f"{order}u{size}")[:, rel // size]
            return col.astype(f"=u{size}")
        col = np.ascontiguousarray(b8[:, rel:rel + size]).view(f"{order}u{size}").ravel()
        return col.astype(f"=u{size}") if self.big else col

    def scalar(self, f: Field) -> pl.Series:
        raw = self.uint(f.offset, f.size)
        dt = f.dtype(self.long_size)
        if isinstance(dt, pl.Binary):
            return self.bytes_matrix_strings(f.offset, np.full(len(self.off), f.size), f.size, binary=True)
        width = {pl.Int8: "i1", pl.Int16: "i2", pl.Int32: "i4", pl.Int64: "i8",
                 pl.UInt8: "u1", pl.UInt16: "u2", pl.UInt32: "u4", pl.UInt64: "u8"}[type(dt)]
        return pl.Series(f.name, raw.astype(f"u{width[1]}", copy=False).view(width), dtype=dt)

    def bytes_matrix_strings(self, start, length: np.ndarray, width: int, binary: bool = False) -> pl.Series:
        """C strings (cut at the first NUL) of at most ``length`` bytes from ``start`` (offset or per-row offset)."""
        n = len(self.off)
        width = int(max(1, min(width, _MAX_STR)))
        parts = []
        step = max(1, _ROW_CHUNK * 16 // width)
        cols = np.arange(width, dtype=np.int64)
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            base = (self.off[lo:hi] + start) if np.isscalar(start) else start[lo:hi]
            idx = np.clip(base[:, None] + cols, 0, self.last)
            mat = self.buf[idx]
            mat[cols[None, :] >= length[lo:hi, None]] = 0
            if not binary:
                mat[np.logical_or.accumulate(mat == 0, axis=1)] = 0
            parts.append(np.ascontiguousarray(mat).view(f"S{width}").ravel())
        flat = np.concatenate(parts) if parts else np.zeros(0, f"S{width}")
        s = pl.Series(flat, dtype=pl.Binary)
        if binary:
            return s
        try:
            return s.cast(pl.String)
        except pl.exceptions.ComputeError:
            uniq, inv = np.unique(flat, return_inverse=True)
            text = pl.Series([u.decode("utf-8", "replace") for u in uniq], dtype=pl.String)
            return text.gather(inv.ravel())

    def string(self, f: Field) -> pl.Series:
        if f.is_dynamic:
            loc = self.uint(f.offset, 4).astype(np.int64)
            rel = (loc & 0xFFFF) + (f.offset + f.size if f.rel_loc else 0)
            ln = np.minimum(loc >> 16, np.maximum(self.length - rel, 0))
            return self.bytes_matrix_strings(self.off + rel, ln, int(ln.max()) if len(ln) else 1).rename(f.name)
        if f.array_len:  # char name[N]
            return self.bytes_matrix_strings(f.offset, np.full(len(self.off), f.size), f.size).rename(f.name)
        ln = np.maximum(self.length - f.offset, 0)  # flexible char name[]: to the end of the record
        return self.bytes_matrix_strings(f.offset, ln, int(ln.max()) if len(ln) else 1).rename(f.name)

    def array(self, f: Field, count: np.ndarray | None = None) -> pl.Series:
        """A List column: fixed ``name[N]``, flexible ``name[]`` (to the record's end), ``__data_loc`` arrays, or
        ``count`` elements per row when given (ftrace's ``kernel_stack``)."""
        dt = f.dtype(self.long_size)
        es = f.element_size(self.long_size)
        start: int | np.ndarray = f.offset
        if f.is_dynamic:
            loc = self.uint(f.offset, 4).astype(np.int64)
            start = (loc & 0xFFFF) + (f.offset + f.size if f.rel_loc else 0)
            n_el = np.minimum(loc >> 16, np.maximum(self.length - start, 0)) // es
        elif count is not None:
            n_el = np.clip(count, 0, np.maximum(self.length - f.offset, 0) // es)
        elif f.array_len:
            n_el = np.full(len(self.off), f.array_len)
        else:
            n_el = np.maximum(self.length - f.offset, 0) // es
        width = int(n_el.max()) if len(n_el) else 0
        inner = dt.inner
        np_inner = {1: np.uint8, 2: np.uint16, 4: np.uint32}.get(es, np.uint64)
        blk = self.block
        if f.name in self.direct and width and count is None:
            mat = self._direct(int(start), width, es, np_inner)
        elif (np.isscalar(start) and blk is not None and es in (1, 2, 4, 8) and width
                and start + width * es <= blk.shape[1] * 4):
            # the elements lie side by side in every row of the record block: one strided copy
            order = ">" if self.big else "<"
            if start % es == 0 and (blk.shape[1] * 4) % es == 0:
                raw = blk.view(f"{order}u{es}")[:, start // es:start // es + width]
                mat = raw.astype(np_inner)
            else:
                raw = np.ascontiguousarray(blk.view(np.uint8)[:, start:start + width * es])
                mat = raw.view(f"{order}u{es}").astype(np_inner, copy=False)
        else:
            cols = [self.uint(start + k * es, es) for k in range(width)]
            mat = np.stack(cols, axis=1).astype(np_inner) if cols else np.zeros((len(self.off), 0), np_inner)
        if inner.is_signed_integer():
            mat = mat.view(np_inner().dtype.str.replace("u", "i"))
        if width == 0:
            return pl.Series(f.name, [[] for _ in range(len(self.off))], dtype=dt)
        s = pl.Series(f.name, mat).cast(pl.List(inner))
        if f.array_len and not f.is_dynamic and count is None:
            return s
        return pl.DataFrame({f.name: s, "_n": n_el}).select(pl.col(f.name).list.head(pl.col("_n"))).to_series()

    def _direct(self, start: int, width: int, es: int, np_inner) -> np.ndarray:
        """``width`` elements of ``es`` (4 or 8) bytes at 4-aligned payload offset ``start`` of every record, raw
        words gathered from the page buffer into the final (rows, width) matrix in row chunks."""
        raw32, off = self.src
        words = width * es // 4
        out = np.empty((len(off), words), np.uint32)
        cols = np.arange(words, dtype=np.int64) + start // 4
        step = max(1, (_ROW_CHUNK * 8) // words)
        for lo in range(0, len(off), step):
            np.take(raw32, (off[lo:lo + step] >> 2)[:, None] + cols, out=out[lo:lo + step], mode="clip")
        mat = out.view(f"{'>' if self.big else '<'}u{es}")
        return mat.astype(np_inner) if self.big else mat.view(np_inner)

    def column(self, f: Field) -> pl.Series:
        if f.is_string:
            return self.string(f)
        dt = f.dtype(self.long_size)
        if isinstance(dt, pl.List):
            return self.array(f)
        return self.scalar(f)


def event_columns(fmt: EventFormat, p: Payloads) -> dict[str, pl.Series]:
    """Every field of ``fmt`` (common fields except ``common_type`` first) as Polars Series named as in the format."""
    out: dict[str, pl.Series] = {}
    # fields read from the record block first, then the block is dropped before the (large) direct gathers
    later = [f for f in fmt.fields if f.name in p.direct]
    for f in [f for f in fmt.fields if f.name not in p.direct] + later:
        if f.name == "common_type":
            continue
        if f is later[0] if later else False:
            p.drop_block()
        if fmt.system == "ftrace" and fmt.name == "kernel_stack" and f.name == "caller":
            try:
                count = p.uint(fmt.field("size").offset, 4).astype(np.int32).astype(np.int64)
            except KeyError:
                count = None
            out[f.name] = p.array(f, count)
            continue
        out[f.name] = p.column(f)
    return {f.name: out[f.name] for f in fmt.fields if f.name in out}
