"""One Polars frame per event from decoded ring-buffer records.

The columns ``trace.dat`` frames share (``ts``, ``cpu``, ``buffer``, ``common_*``, ``common_comm`` from the saved
cmdlines) and every field of the event's format (:mod:`.fields`). Two sources of records:

* the in-memory reader's records, copied out of the page buffer per event in time order (:mod:`.records`): each
  frame is built chunk by chunk, every chunk's records freed as its rows are built (:func:`frame_from_records`);
* the streaming reader builds a batch's frames straight from its pages (:func:`_frame`).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from tracekit.formats import EventFormat
from tracekit.symbols import Kallsyms

from .fields import Payloads, event_columns
from .records import Chunk, EventRecords, record_width

_RESERVED = ("ts", "cpu", "buffer")
_PID_CHUNK = 1 << 20


@dataclass
class _State:
    """What the frame builders need to name the records: the page buffer (streaming reader only), the byte order
    and long size, the cmdlines, the buffer names, kallsyms and the printk formats."""

    path: str
    buf: np.ndarray | None
    big: bool
    long_size: int
    pids: np.ndarray
    comms: list[str]
    buffer_names: list[str]
    kallsyms: Kallsyms | None
    printk: dict[int, str]
    comm_lookup: tuple | None = None


def frame_from_records(st: _State, fmt: EventFormat, rec: EventRecords, threads: int = 2) -> pl.DataFrame:
    """The event's frame, built chunk by chunk (``threads`` chunks at a time: numpy and Polars release the GIL);
    each chunk is dropped from ``rec`` as soon as its rows are built."""
    if st.comm_lookup is None:
        st.comm_lookup = _comm_lookup(st.pids, st.comms)

    def one(c: Chunk) -> pl.DataFrame:
        if c.offsets is None:
            p = Payloads.from_block(c.words, c.length, st.big, st.long_size)
        else:
            p = Payloads(c.words.view(np.uint8), c.offsets, c.length, st.big, st.long_size,
                         record_width(fmt, int(c.length.max())))
        c.words = None
        return _piece(st, fmt, p, c.ts, rec.page_cpu[c.page], rec.page_group[c.page])

    chunks, rec.chunks = rec.chunks, []
    if threads > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(threads) as pool:
            # the list gives each chunk up as it is handed over: a built chunk is not kept alive by it
            pieces = list(pool.map(one, _drain(chunks)))
    else:
        pieces = [one(c) for c in _drain(chunks)]
    df = pieces[0] if len(pieces) == 1 else pl.concat(pieces, how="vertical", rechunk=False)
    return _finish(st, fmt, df)


def _drain(chunks: list) -> Iterator:
    while chunks:
        yield chunks.pop(0)


def _frame(st: _State, fmt: EventFormat, data: np.ndarray, length: np.ndarray, ts: np.ndarray, cpu: np.ndarray,
           group: np.ndarray) -> pl.DataFrame:
    """The event's frame from records read in place in ``st.buf`` (payload offsets ``data``)."""
    width = record_width(fmt, int(length.max()) if len(length) else 0)
    direct = frozenset()
    if not any(f.is_dynamic or f.array_len == 0 for f in fmt.fields) and not (fmt.system == "ftrace"
                                                                               and fmt.name == "kernel_stack"):
        # fixed 4-/8-byte element arrays (sys_enter's args[6]) skip the record block: gathered straight out
        direct = frozenset(f.name for f in fmt.fields if f.array_len and not f.is_string and f.offset % 4 == 0
                           and f.element_size(st.long_size) in (4, 8) and f.size % 4 == 0)
        if direct:
            width = max([f.offset + f.size for f in fmt.fields if f.name not in direct] + [4])
    p = Payloads(st.buf, data, length, st.big, st.long_size, width, direct)
    return _finish(st, fmt, _piece(st, fmt, p, ts, cpu, group))


def _piece(st: _State, fmt: EventFormat, p: Payloads, ts: np.ndarray, cpu: np.ndarray,
           group: np.ndarray) -> pl.DataFrame:
    """The frame of the records in ``p`` (before the ftrace-specific columns of :func:`_finish`)."""
    cols = event_columns(fmt, p)
    del p
    out: dict[str, pl.Series] = {"ts": pl.Series("ts", ts, dtype=pl.Int64), "cpu": pl.Series("cpu", cpu, dtype=pl.Int32)}
    if len(st.buffer_names) > 1:
        if len(group) and group.min() == group.max():  # one buffer: a constant column, no gather
            out["buffer"] = pl.repeat(st.buffer_names[int(group[0])], len(group), dtype=pl.String, eager=True)
        else:
            out["buffer"] = pl.Series(st.buffer_names, dtype=pl.String).gather(group.astype(np.uint32))
        out["buffer"] = out["buffer"].rename("buffer")
    for name in ("common_pid", "common_flags", "common_preempt_count"):
        if name in cols:
            out[name] = cols.pop(name)
    if "common_pid" in out:
        out["common_comm"] = _comm(st, out["common_pid"].to_numpy())
    for name, s in cols.items():
        if name.startswith("common_"):
            out[name] = s
    for name, s in cols.items():
        if not name.startswith("common_"):
            key = f"{name}_" if name in _RESERVED else name
            out[key] = s.rename(key)
    return pl.DataFrame(out)


def _comm(st: _State, pid: np.ndarray) -> pl.Series:
    """``common_comm``: pid -> comm from the saved cmdlines (``<idle>`` for 0; the first line of a pid wins);
    pids without a line get a null."""
    if st.comm_lookup is None:
        st.comm_lookup = _comm_lookup(st.pids, st.comms)
    lo, table, vals = st.comm_lookup
    if table is None:
        return _comm_search(st, pid)
    # a dense table over the pids' range (each row one lookup); rows outside it point at vals' final null
    at = pid.astype(np.int64) - lo if lo else pid
    idx = np.take(table, at, mode="clip")
    if len(at) and (int(at.min()) < 0 or int(at.max()) >= len(table)):
        idx[(at < 0) | (at >= len(table))] = len(vals) - 1
    return vals.gather(pl.Series(idx)).rename("common_comm")


def _comm_lookup(pids: np.ndarray, comms: list[str]) -> tuple[int, np.ndarray | None, pl.Series]:
    """``(lowest pid, table, names)``: ``names[table[pid - lowest]]`` is the comm of ``pid`` (names' last entry is
    the null of unknown pids); table is None when the pids span more than 2**24 values."""
    keys, first = np.unique(np.concatenate([[0], pids]).astype(np.int64), return_index=True)
    lo, hi = int(keys[0]), int(keys[-1])
    if hi - lo >= 1 << 24:
        return lo, None, pl.Series([], dtype=pl.String)
    vals = pl.Series(["<idle>"] + comms + [None], dtype=pl.String).gather(np.r_[first, len(comms) + 1]
                                                                         .astype(np.uint32))
    table = np.full(hi - lo + 1, len(keys), np.uint32)
    table[keys - lo] = np.arange(len(keys), dtype=np.uint32)
    return lo, table, vals


def _comm_search(st: _State, pid: np.ndarray) -> pl.Series:
    """:func:`_comm` by binary search in the sorted cmdlines pids (pids too spread for a table)."""
    keys, first = np.unique(np.concatenate([[0], st.pids]).astype(np.int64), return_index=True)
    vals = pl.Series(["<idle>"] + st.comms, dtype=pl.String).gather(first.astype(np.uint32))
    # keys outside the pid column's range match nothing: dropped, so the search runs in its own width
    span = np.iinfo(pid.dtype) if pid.dtype.kind in "iu" else np.iinfo(np.int64)
    keep = (keys >= span.min) & (keys <= span.max)
    keys, vals = keys[keep].astype(pid.dtype), vals.filter(pl.Series(keep))
    # searched in row chunks straight into 32-bit gather indices: no whole-column int64 temporaries
    at = np.empty(len(pid), np.uint32)
    miss = []
    for lo in range(0, len(pid), _PID_CHUNK):
        part = pid[lo:lo + _PID_CHUNK]
        a = np.clip(np.searchsorted(keys, part), 0, max(len(keys) - 1, 0))
        at[lo:lo + _PID_CHUNK] = a
        miss.append(np.flatnonzero(keys[a] != part) + lo if len(keys) else np.arange(lo, lo + len(part)))
    idx = pl.Series(at)
    del at
    miss = np.concatenate(miss) if miss else np.zeros(0, np.int64)
    if len(miss):
        idx = idx.scatter(miss, None)
    return vals.gather(idx).rename("common_comm")


def _finish(st: _State, fmt: EventFormat, df: pl.DataFrame) -> pl.DataFrame:
    """ftrace's own events: ``kernel_stack``'s caller symbols and ``bprint``'s decoded text."""
    if fmt.system == "ftrace" and fmt.name == "kernel_stack" and "caller" in df.columns:
        df = df.with_columns(_callers(st, df["caller"]))
    if fmt.system == "ftrace" and fmt.name == "bprint":
        from .bprint import bprint_text

        df = df.with_columns(bprint_text(df, st.printk, st.big, st.kallsyms, st.long_size))
    return df


def _callers(st: _State, caller: pl.Series) -> pl.Series:
    """``callers``: the symbol name of every caller address, as trace-cmd's stack plugin shows them."""
    flat = caller.explode().drop_nulls().unique().sort()
    if st.kallsyms is None or flat.is_empty() or not len(st.kallsyms):
        return caller.list.eval(pl.lit(None, dtype=pl.String)).rename("callers")
    names = pl.Series(st.kallsyms.resolve(flat.to_numpy())[0].tolist(), dtype=pl.String)
    return caller.list.eval(pl.element().replace_strict(flat, names, default=None, return_dtype=pl.String)) \
        .rename("callers")
