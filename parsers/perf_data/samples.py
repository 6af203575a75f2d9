"""Vectorised decoding of PERF_RECORD_SAMPLE bodies, per ``perf_event.h`` (Linux 6.x) ``PERF_RECORD_SAMPLE``.

All samples of one attr are decoded together: a cursor array holds each record's read position and every
``sample_type`` field, in the kernel's order, is one gather over all records; variable parts (callchain, read
groups, raw data, branch stacks, user regs and stack) advance each cursor by its own length.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from tracekit.formats import EventFormat

from . import layout as L
from .records import Stream, _split

_U64_MAX = np.uint64(2**64 - 1)


def id_position(sample_type: int) -> int | None:
    """Byte offset of the sample ``id`` after the record header (None when samples carry no id)."""
    if sample_type & L.S["IDENTIFIER"]:
        return 0
    if not sample_type & L.S["ID"]:
        return None
    return 8 * sum(bool(sample_type & L.S[b]) for b in ("IP", "TID", "TIME", "ADDR"))


def _lists(words: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gather ``counts[i]`` u64 words from word index ``starts[i]`` for every i: (flat values, list offsets)."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    if not total:
        return np.zeros(0, dtype=np.uint64), offsets
    idx = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1] - starts, counts)
    return words[idx], offsets


def decode(stream: Stream, pos: np.ndarray, attr, limit_nr: int = 1 << 16) -> tuple[dict, np.ndarray]:
    """Decode the samples at ``pos`` (record offsets) of one attr.

    Args:
        stream: the records' buffer.
        pos: offsets of the PERF_RECORD_SAMPLE headers, all of this attr.
        attr: the :class:`~tracekit.parsers.perf_data.header.Attr`.

    Returns:
        (columns, ok): numpy arrays per field (``callchain_ip`` as (flat, offsets), ``raw`` as (starts, sizes)),
        and a mask of records whose fields fit in their size (the others are damaged and must be dropped).
    """
    st = attr.sample_type
    rf = attr.read_format
    end = pos + stream.u16(pos + 6).astype(np.int64)
    lim = stream.size - 8
    aligned = not ((pos & 7).any())
    words = stream.words() if aligned else None

    def rd(c: np.ndarray) -> np.ndarray:
        c = np.minimum(c, lim)
        return words[c >> 3] if aligned else stream.u64(c)

    def lists(first: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _lists(words, first >> 3, counts) if aligned else _gather_lists(stream, first, counts)

    cur = pos + 8
    ok = np.ones(len(pos), dtype=bool)
    cols: dict[str, object] = {}

    def fixed(name: str) -> np.ndarray:
        nonlocal cur
        v = rd(cur)
        cur = cur + 8
        return v

    if st & L.S["IDENTIFIER"]:
        cols["id"] = fixed("id")
    if st & L.S["IP"]:
        cols["ip"] = fixed("ip")
    if st & L.S["TID"]:
        a, b = _split(fixed("tid"), stream.big)
        cols["pid"], cols["tid"] = a.astype(np.int32), b.astype(np.int32)
    if st & L.S["TIME"]:
        cols["ts"] = fixed("time").astype(np.int64)
    if st & L.S["ADDR"]:
        cols["addr"] = fixed("addr")
    if st & L.S["ID"]:
        cols["id"] = fixed("id")
    if st & L.S["STREAM_ID"]:
        cols["stream_id"] = fixed("stream_id")
    if st & L.S["CPU"]:
        cols["cpu"] = _split(fixed("cpu"), stream.big)[0].astype(np.int32)
    if st & L.S["PERIOD"]:
        cols["period"] = fixed("period")
    if st & L.S["READ"]:
        per = 1 + bool(rf & L.READ_ID) + bool(rf & L.READ_LOST)
        times = bool(rf & L.READ_TOTAL_TIME_ENABLED) + bool(rf & L.READ_TOTAL_TIME_RUNNING)
        if rf & L.READ_GROUP:
            nr = rd(cur).astype(np.int64)
            bad = (nr < 0) | (nr > limit_nr)
            ok &= ~bad
            nr = np.where(bad, 0, nr)
            cols["read_values"] = lists(cur + 8 + 8 * times, np.where(cur + 8 * (1 + times + nr * per) <= end,
                                                                        nr * per, 0))
            cur = cur + 8 * (1 + times + nr * per)
        else:
            cols["read_value"] = rd(cur)
            cur = cur + 8 * (1 + times + per - 1)
            if rf & L.READ_ID:
                cols["read_id"] = rd(cur - 8 * (per - 1))
    if st & L.S["CALLCHAIN"]:
        nr = rd(cur)
        bad = nr > np.uint64(limit_nr)
        ok &= ~bad
        nr = np.where(bad, 0, nr).astype(np.int64)
        fits = cur + 8 * (1 + nr) <= end
        ok &= fits
        nr = np.where(fits, nr, 0)
        cols["callchain_raw"] = lists(cur + 8, nr)
        cur = cur + 8 * (1 + nr)
    if st & L.S["RAW"]:
        size = stream.u32(np.minimum(cur, lim)).astype(np.int64)
        cols["raw"] = (cur + 4, size)
        cur = cur + 4 + size
    if st & L.S["BRANCH_STACK"]:
        nr = rd(cur).astype(np.int64)
        bad = (nr < 0) | (nr > limit_nr)
        ok &= ~bad
        nr = np.where(bad, 0, nr)
        hw = 8 if attr.attr.get("branch_sample_type", 0) & L.PERF_SAMPLE_BRANCH_HW_INDEX else 0
        cols["branch_nr"] = nr
        fits = cur + 8 + hw + 24 * nr <= end
        cols["branch_stack"] = lists(cur + 8 + hw, np.where(fits, nr * 3, 0))  # from, to, flags per entry
        cur = cur + 8 + hw + 24 * nr
    for bit, mask_key in (("REGS_USER", "sample_regs_user"), ("STACK_USER", None), ("WEIGHT", None),
                          ("DATA_SRC", None), ("TRANSACTION", None), ("REGS_INTR", "sample_regs_intr"),
                          ("PHYS_ADDR", None), ("AUX", None), ("CGROUP", None), ("DATA_PAGE_SIZE", None),
                          ("CODE_PAGE_SIZE", None)):
        if bit == "WEIGHT" and st & L.S["WEIGHT_STRUCT"]:
            cols["weight"] = fixed("weight")
            continue
        if not st & L.S[bit]:
            continue
        if mask_key:  # u64 abi, then one u64 per bit of the register mask when abi != 0
            nregs = bin(int(attr.attr.get(mask_key, 0))).count("1")
            abi = rd(cur)
            cur = cur + 8 + np.where(abi != 0, 8 * nregs, 0)
        elif bit in ("STACK_USER", "AUX"):  # u64 size, data[size], (stack) u64 dyn_size
            size = rd(cur).astype(np.int64)
            bad = (size < 0) | (size > 1 << 20)
            ok &= ~bad
            size = np.where(bad, 0, size)
            cur = cur + 8 + size + (np.where(size != 0, 8, 0) if bit == "STACK_USER" else 0)
        else:
            cols[bit.lower()] = fixed(bit)
    ok &= cur <= end
    return cols, ok


def _gather_lists(stream: Stream, starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    if not total:
        return np.zeros(0, dtype=np.uint64), offsets
    byte = np.repeat(starts, counts) + 8 * (np.arange(total) - np.repeat(offsets[:-1], counts))
    return stream.u64(byte), offsets


def list_series(name: str, values: pl.Series, offsets: np.ndarray) -> pl.Series:
    """A List column from flat values and offsets (no per-row Python)."""
    n = len(offsets) - 1
    counts = np.diff(offsets)
    row = pl.Series(np.repeat(np.arange(n, dtype=np.int64), counts))
    df = pl.DataFrame({"row": row, "v": values})
    grouped = df.group_by("row", maintain_order=True).agg(pl.col("v"))
    full = pl.DataFrame({"row": np.arange(n, dtype=np.int64)}).join(grouped, on="row", how="left")
    out = full["v"].fill_null(pl.lit([], dtype=pl.List(values.dtype)))
    return out.alias(name)


def tracepoint_columns(stream: Stream, starts: np.ndarray, sizes: np.ndarray, fmt: EventFormat,
                       long_size: int = 8) -> dict[str, pl.Series]:
    """The event's own fields decoded from RAW data (``starts``/``sizes`` per record), typed by its format."""
    out: dict[str, pl.Series] = {}
    mv = stream.buf
    for f in fmt.own_fields:
        dtype = f.dtype(long_size)
        if f.is_dynamic:
            loc = stream.u32(starts + f.offset)
            off = (loc & 0xFFFF).astype(np.int64) + (starts + f.offset + 4 if f.rel_loc else starts)
            ln = (loc >> 16).astype(np.int64)
            vals = [bytes(mv[a:a + b]) for a, b in zip(off.tolist(), ln.tolist(), strict=True)]
            if f.is_string:
                out[f.name] = pl.Series(f.name, [v.split(b"\0", 1)[0].decode("utf-8", "replace") for v in vals],
                                        dtype=pl.String)
            else:
                out[f.name] = pl.Series(f.name, vals, dtype=pl.Binary)
            continue
        g = mv[np.asarray(starts)[:, None] + f.offset + np.arange(f.size)]
        g = np.ascontiguousarray(g)
        if f.is_string:
            s = g.view(f"S{f.size}")[:, 0]
            out[f.name] = pl.Series(f.name, np.char.decode(s, "utf-8", "replace"), dtype=pl.String)
        elif isinstance(dtype, pl.List):
            es = f.element_size(long_size)
            kind = "i" if f.signed and not f.is_pointer else "u"
            arr = g.view(f"{'>' if stream.big else '<'}{kind}{es}")
            out[f.name] = pl.Series(f.name, arr.astype(arr.dtype.newbyteorder("="))).cast(dtype)
        elif f.size in (1, 2, 4, 8):
            kind = "i" if f.signed else "u"
            arr = g.view(f"{'>' if stream.big else '<'}{kind}{f.size}")[:, 0]
            out[f.name] = pl.Series(f.name, arr.astype(arr.dtype.newbyteorder("="))).cast(dtype)
        else:
            out[f.name] = pl.Series(f.name, [bytes(r) for r in g], dtype=pl.Binary)
        bad = (f.offset + f.size) > sizes
        if bad.any():
            out[f.name] = out[f.name].scatter(np.nonzero(bad)[0], None)
    return out
