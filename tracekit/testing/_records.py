"""Event records as the kernel lays them out: the fixed part of a format's fields (numpy structured dtype from the
format's offsets and sizes), ``__data_loc`` payloads after it (locator ``offset | length << 16``), and ftrace stack
entries that hold ``size`` callers. Used by :mod:`tracekit.testing.tracedat_writer`."""

from __future__ import annotations

import numpy as np
import polars as pl

from ..errors import ConfigError
from ..formats import EventFormat, Field

__all__ = ["encode"]


def _np_int(f: Field, size: int) -> str:
    return ("<i" if f.signed else "<u") + str(size)


def _record_dtype(fmt: EventFormat) -> tuple[np.dtype, list[Field]]:
    """A structured dtype of the fixed part of ``fmt``'s record, and its dynamic (``__data_loc``) fields."""
    names, formats, offsets, dynamic = [], [], [], []
    end = 0
    for f in fmt.fields:
        if f.size == 0:             # flexible array such as ftrace:function args[]: nothing written
            continue
        end = max(end, f.offset + f.size)
        if f.rel_loc:
            raise ConfigError(f"{fmt.full_name}.{f.name}: __rel_loc fields are not supported by the writer")
        if f.data_loc:
            dynamic.append(f)
            names.append(f.name)
            formats.append("<u4")
        elif f.is_string:
            names.append(f.name)
            formats.append(f"S{f.size}")
        elif f.array_len:
            es = f.size // f.array_len
            names.append(f.name)
            formats.append((_np_int(f, es) if not f.is_pointer else "<u8", (f.array_len,)))
        elif f.size in (1, 2, 4, 8):
            names.append(f.name)
            formats.append(_np_int(f, f.size))
        else:
            names.append(f.name)
            formats.append(f"V{f.size}")
        offsets.append(f.offset)
    itemsize = (end + 3) & ~3
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize}), dynamic


def _column(df: pl.DataFrame, name: str, n: int) -> pl.Series | None:
    if name in df.columns:
        return df.get_column(name)
    if name == "common_pid" and "pid" in df.columns:
        return df.get_column("pid")
    return None


def encode(fmt: EventFormat, df: pl.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    """Encode the rows of ``df`` as records of ``fmt``.

    Returns:
        blocks of (row indices, uint8 records of one length), one block per distinct record length.
    """
    n = df.height
    dtype, dynamic = _record_dtype(fmt)
    rec = np.zeros(n, dtype=dtype)
    for name in dtype.names:
        if name == "common_type":
            rec[name] = fmt.id
            continue
        f = fmt.field(name)
        if f.data_loc:
            continue
        col = _column(df, name, n)
        if col is None:
            continue
        if f.is_string:
            rec[name] = np.array([s.encode()[: f.size - 1] for s in col.fill_null("").to_list()], dtype=f"S{f.size}")
        elif f.array_len:
            width = f.array_len
            rows = col.to_list()
            arr = np.zeros((n, width), dtype=np.uint64 if not f.signed else np.int64)
            for i, row in enumerate(rows):
                if row:
                    arr[i, : min(width, len(row))] = row[:width]
            rec[name] = arr
        else:
            values = col.fill_null(0).to_numpy()
            if values.dtype == np.bool_:
                values = values.astype(np.uint8)
            rec[name] = values.astype(dtype.fields[name][0])
    fixed = rec.view(np.uint8).reshape(n, dtype.itemsize)
    tail = _stack_tail(fmt, df)
    if tail is not None:
        return _encode_stack(fmt, fixed, tail, df)
    if not dynamic:
        return [(np.arange(n), fixed)]
    # __data_loc: payload after the fixed part, locator = offset | (length << 16); strings carry their NUL
    payloads = []
    for f in dynamic:
        col = _column(df, f.name, n)
        vals = col.to_list() if col is not None else [None] * n
        payloads.append([(v.encode() + b"\0") if isinstance(v, str) else (bytes(v) if v is not None else b"\0")
                         for v in vals])
    base = max(fld.offset + fld.size for fld in fmt.fields)
    lengths = np.full(n, base, dtype=np.int64)
    locs = []
    for p in payloads:
        plen = np.fromiter((len(b) for b in p), dtype=np.int64, count=n)
        locs.append(lengths | (plen << 16))
        lengths = lengths + plen
    padded = (lengths + 3) & ~3
    blocks = []
    for size in np.unique(padded):
        rows = np.flatnonzero(padded == size)
        out = np.zeros((len(rows), int(size)), dtype=np.uint8)
        out[:, : dtype.itemsize] = fixed[rows, : min(dtype.itemsize, int(size))]
        for f, loc, p in zip(dynamic, locs, payloads, strict=True):
            out[:, f.offset:f.offset + 4] = loc[rows].astype("<u4").view(np.uint8).reshape(-1, 4)
            for j, r in enumerate(rows):
                start = int(loc[r] & 0xFFFF)
                out[j, start:start + len(p[r])] = np.frombuffer(p[r], dtype=np.uint8)
        blocks.append((rows, out))
    return blocks


def _stack_tail(fmt: EventFormat, df: pl.DataFrame) -> Field | None:
    """The ``caller`` array of an ftrace stack event (``kernel_stack``, ``user_stack``): the kernel records ``size``
    entries (``struct stack_entry``'s ``caller[]`` is flexible; the format's ``[8]`` is nominal), so the record
    length follows the list given for each row."""
    if fmt.system != "ftrace" or fmt.name not in ("kernel_stack", "user_stack") or "caller" not in df.columns:
        return None
    f = fmt.field("caller")
    return f if f.array_len else None


def _encode_stack(fmt: EventFormat, fixed: np.ndarray, f: Field, df: pl.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    callers = df.get_column("caller").to_list()
    lengths = np.fromiter((len(c or ()) for c in callers), dtype=np.int64, count=len(callers))
    es = f.size // f.array_len
    blocks = []
    for k in np.unique(lengths):
        rows = np.flatnonzero(lengths == k)
        size = f.offset + int(k) * es
        out = np.zeros((len(rows), size), dtype=np.uint8)
        out[:, : f.offset] = fixed[rows, : f.offset]
        if k:
            vals = np.array([callers[r] for r in rows], dtype=np.uint64).astype(f"<u{es}")
            out[:, f.offset:] = vals.view(np.uint8).reshape(len(rows), int(k) * es)
        blocks.append((rows, out))
    return blocks
