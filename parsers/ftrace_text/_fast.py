"""Byte-level fast path of the text reader: line bounds, the common event-line header and trace-cmd's
``=> sym (addr)`` frame lines read with numpy over the raw bytes, strings cut out of the buffer through Arrow.

What it reads (anything else goes to the Polars classifier of :mod:`._lines`, so the result is the same):
    - event lines ``[instance: ]comm-pid [cpu] [flags] ts: name: info`` (trace-cmd report default / ``-t`` /
      ``-R``, with the buffer name trace-cmd prints for an instance, and tracefs lines with or without the irq-flags
      column), where ``name`` is ``[A-Za-z_][\\w.+-]*`` followed by ``: ``;
    - frame lines ``=> sym (hex)`` of trace-cmd's ``kernel_stack`` (all of them, or none: any other frame form sends
      every frame line to :func:`._lines.attach_stacks`).

Uses pyarrow (a buffer and offsets become a String column without a Python object per line). For text with mail
quotes or invalid UTF-8, :func:`split` returns None and the reader takes the Polars path.
"""

from __future__ import annotations

import codecs
import re

import numpy as np
import polars as pl
import pyarrow as pa

from ._invert import HEX_DIGIT

_SP, _COLON = 32, 58


class Text:
    """The bytes of a text trace with the bounds of every line (``starts``/``ends``, end excludes ``\\n``/``\\r``)."""

    def __init__(self, data: bytes):
        self.data = data
        b = np.frombuffer(data, dtype=np.uint8)
        # newlines found 8 MiB at a time (the comparison's mask stays in reused memory)
        step = 1 << 23
        nl = np.concatenate([np.flatnonzero(b[lo:lo + step] == 10) + lo for lo in range(0, len(b), step)]) \
            if len(b) else np.zeros(0, dtype=np.int64)
        if len(b) and b[-1] != 10:
            nl = np.append(nl, len(b))       # a last line without its newline
        starts = np.empty(len(nl), dtype=np.int64)
        starts[:1] = 0
        starts[1:] = nl[:-1] + 1
        ends = nl
        if data.find(b"\r") >= 0:
            while True:
                cr = (ends > starts) & (b[np.maximum(ends - 1, 0)] == 13)
                if not cr.any():
                    break
                ends = ends - cr
        self.b, self.starts, self.ends = b, starts, ends
        self.high = np.zeros(0, dtype=np.int64)    # offsets of non-ASCII bytes (set by split())
        self.first: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.starts)

    def arrow(self, begin: np.ndarray, end: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
        """The text of each byte range (ranges in increasing, non-overlapping order) as an Arrow large_string array
        (the bytes between the ranges are cut out by one filter)."""
        n = len(begin)
        off = np.empty(2 * n + 1, dtype=np.int64)
        off[0:2 * n:2] = begin
        off[1:2 * n:2] = np.maximum(end, begin)
        off[2 * n] = off[2 * n - 1] if n else 0
        valid = None
        if null is not None and null.any():
            bits = np.ones(2 * n, dtype=bool)
            bits[0::2] = ~null
            valid = pa.py_buffer(np.packbits(bits, bitorder="little"))
        arr = pa.LargeStringArray.from_buffers(2 * n, pa.py_buffer(off), pa.py_buffer(self.data), valid)
        keep = np.zeros(2 * n, dtype=bool)
        keep[0::2] = True
        return arr.filter(pa.array(keep))

    def strings(self, begin: np.ndarray, end: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
        """:meth:`arrow` as a Polars String Series."""
        if len(begin) == 0:
            return pl.Series(values=[], dtype=pl.String)
        return pl.Series(values=pl.from_arrow(self.arrow(begin, end, null)), dtype=pl.String)


def split(data: bytes) -> Text | None:
    """Line bounds of ``data``, or None when the fast path does not apply (mail quotes, not UTF-8)."""
    t = Text(data)
    if len(t.starts) == 0:
        return None
    c0, c1, _ = first_bytes(t)
    if ((c0 == 62) | ((c0 == _SP) & (c1 == 62))).any():
        return None            # "> " quotes: the Polars path strips them
    t.high = np.flatnonzero(t.b >= 128)
    if len(t.high):
        try:
            codecs.decode(memoryview(data), "utf-8")
        except UnicodeDecodeError:
            return None        # the Polars path replaces invalid bytes
    return t


def first_bytes(t: Text) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first three bytes of every line (its line end or 0 past its end), computed once."""
    if t.first is None:
        s, b = t.starts, t.b
        pad = np.concatenate([b[-3:], np.zeros(3, dtype=np.uint8)]) if len(b) < 3 else b
        # one 3-byte gather per line: past a short line's end is its own "\n" / "\r", never a byte that matters
        w = np.lib.stride_tricks.sliding_window_view(pad, 3)[np.minimum(s, len(pad) - 3)]
        for r in np.flatnonzero(s > len(pad) - 3):
            w[r] = np.frombuffer(bytes(b[s[r]:t.ends[r]][:3]).ljust(3, b"\0"), dtype=np.uint8)
        t.first = (w[:, 0], w[:, 1], w[:, 2])
    return t.first


def stack_line_mask(t: Text) -> np.ndarray:
    """Lines that start ``=>`` or `` =>`` (the frame lines :func:`._lines.classify` takes by prefix)."""
    c0, c1, c2 = first_bytes(t)
    return ((c0 == 61) & (c1 == 62)) | ((c0 == _SP) & (c1 == 61) & (c2 == 62))


_NAME = re.compile(r"^[A-Za-z_][\w.+-]*$")
#: the part of a line up to the "]" after the cpu (few distinct values: one per task and cpu)
_HEAD = re.compile(r"^\s*(?P<comm>\S.*?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]$", re.S)
_FLAGS = re.compile(r"^[.A-Za-z0-9]{4,5}$")
#: seconds.fraction or a raw count that fits Int64 nanoseconds (longer digit runs are damage: left to the slow path)
_TS = r"^(?:\d{1,9}\.\d{1,9}|\d{1,18})$"
_PID_MAX = 2**31 - 1


def _heads(heads: pl.Series) -> pl.DataFrame:
    """``head, _hok, comm, pid, cpu`` of each distinct head (``comm-pid [cpu]``), read in Python."""
    uniq = heads.unique().to_list()
    rows = []
    for h in uniq:
        m = _HEAD.match(h) if h is not None else None
        ok = m is not None and int(m["pid"]) <= _PID_MAX and int(m["cpu"]) <= _PID_MAX
        rows.append((h, True, m["comm"].strip(), int(m["pid"]), int(m["cpu"])) if ok else (h, False, None, None, None))
    return pl.DataFrame(rows, schema={"_head": pl.String, "_hok": pl.Boolean, "comm": pl.String, "pid": pl.Int64,
                                      "cpu": pl.Int32}, orient="row")


#: trace-cmd report of a file with several buffers prints ``instance: `` before the lines of an instance
_BUF_CH = np.zeros(256, dtype=bool)
_BUF_CH[np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-", dtype=np.uint8)] = True
_K_BUF = 32        # a buffer name and its ": " within the first bytes of the line


def _buffer_prefix(t: Text, rows: np.ndarray) -> tuple[np.ndarray, pl.Series | None]:
    """Where each line's own text starts after a buffer-name prefix ``[A-Za-z0-9_.+-]+: ``, and the buffer names
    (``""`` for the top buffer; None when no line has a prefix). Only lines that start with a non-blank are looked
    at, in chunks of a (rows, 32) byte matrix."""
    begin = t.starts[rows].copy()
    first = first_bytes(t)[0][rows]
    cand = np.flatnonzero((first != _SP) & _BUF_CH[first])
    if len(cand) == 0 or len(t.b) < _K_BUF:
        return begin, None
    view = np.lib.stride_tricks.sliding_window_view(t.b, _K_BUF)
    names: list[bytes] = [b""]                             # code 0: no prefix (the top buffer)
    code = np.zeros(len(rows), dtype=np.uint32)
    for lo in range(0, len(cand), 1 << 20):
        part = cand[lo:lo + (1 << 20)]
        w = view[np.minimum(begin[part], len(view) - 1)]
        stop = np.argmax(~_BUF_CH[w], axis=1)            # the first byte that is no name character
        r = np.arange(len(part))
        ok = (stop > 0) & (w[r, stop] == _COLON) & (w[r, np.minimum(stop + 1, _K_BUF - 1)] == _SP)
        ok &= (stop + 2 < _K_BUF) & (begin[part] + stop + 2 <= t.ends[rows][part])
        ok &= begin[part] < len(view)        # a window clipped at the buffer's end does not start at the line
        # a few distinct names: each is matched against the whole chunk at once
        known = list(range(1, len(names)))
        while ok.any():
            if known:
                i = known.pop()
            else:
                r0 = int(np.argmax(ok))
                names.append(bytes(w[r0, :stop[r0]]))
                i = len(names) - 1
            nm = np.frombuffer(names[i] + b": ", dtype=np.uint8)
            hit = ok & (stop == len(nm) - 2) & (w[:, :len(nm)] == nm).all(axis=1)
            code[part[hit]] = i
            ok &= ~hit
    if len(names) == 1:
        return begin, None
    size = np.array([0] + [len(nm) + 2 for nm in names[1:]], dtype=np.int64)
    begin += size[code]
    buffer = pl.Series("buffer", [nm.decode() for nm in names], dtype=pl.String).gather(pl.Series(code))
    return begin, buffer


def parse_events(t: Text, rows: np.ndarray) -> tuple[np.ndarray, pl.DataFrame]:
    """Read ``comm-pid [cpu] [flags] ts: name: info`` lines among ``rows`` (indices into the lines) with literal
    finds and slices, and the ``comm-pid [cpu]`` heads once per distinct head; the same columns as
    :func:`._lines.classify` gives for them.

    Returns:
        (mask over ``rows`` of the lines read here, their frame ``line_no, comm, pid, cpu, flags, ts, ts_frac,
        event, info``: ``ts`` Int64 ns, ``ts_frac`` the number of digits after the timestamp's dot).
    """
    ascii_rows = np.ones(len(rows), dtype=bool)
    if len(t.high):
        # Polars finds return byte offsets and slices take characters: only ASCII lines are cut here
        line_of = np.searchsorted(t.starts, t.high, side="right") - 1
        ascii_rows = ~np.isin(rows, line_of)
    rows = rows[ascii_rows]
    c = pl.col
    begin, buffer = _buffer_prefix(t, rows)
    df = pl.DataFrame({"line": t.strings(begin, t.ends[rows])}).lazy()
    # field_0 (before the first ": "), the event name (to the next ": ") and the info after it
    df = df.with_columns(c("line").str.find(": ", literal=True).alias("_c1"))
    df = df.with_columns(c("line").str.slice(0, c("_c1")).alias("_f0"),
                         c("line").str.slice(c("_c1") + 2).alias("_r"))
    df = df.with_columns(c("_r").str.find(": ", literal=True).alias("_c2"),
                         c("_f0").str.find("]", literal=True).alias("_rb"))
    df = df.with_columns(
        c("_r").str.slice(0, c("_c2")).str.strip_chars().str.strip_suffix(":").alias("event"),
        pl.when(c("_c2").is_null()).then(pl.lit("")).otherwise(c("_r").str.slice(c("_c2") + 2).str.strip_chars())
        .alias("info"),
        c("_f0").str.slice(0, c("_rb") + 1).alias("_head"),
        c("_f0").str.slice(c("_rb") + 1).str.strip_chars_start().alias("_r2"))
    df = df.with_columns(c("_r2").str.find(" ", literal=True).alias("_sp"))
    df = df.with_columns(
        pl.when(c("_sp").is_not_null()).then(c("_r2").str.slice(0, c("_sp"))).alias("flags"),
        pl.when(c("_sp").is_null()).then(c("_r2")).otherwise(c("_r2").str.slice(c("_sp")).str.strip_chars_start())
        .alias("_ts"))
    df = df.with_columns((c("_c1").is_not_null() & c("_rb").is_not_null() & c("_ts").str.contains(_TS))
                         .fill_null(False).alias("_ok"))
    out = df.select("_ok", "_head", "flags", "_ts", "event", "info").collect()
    heads = _heads(out["_head"].filter(out["_ok"]))
    out = out.join(heads, on="_head", how="left", maintain_order="left")
    names = [n for n in out["event"].filter(out["_ok"]).unique().to_list() if n is not None and _NAME.match(n)]
    flags = out["flags"].drop_nulls().unique().to_list()
    bad_flags = [f for f in flags if not _FLAGS.match(f)]
    ok = out["_ok"] & out["_hok"].fill_null(False) & out["event"].is_in(names).fill_null(False)
    if bad_flags:
        ok &= ~out["flags"].is_in(bad_flags).fill_null(False)
    out = out.filter(ok)
    parts = out["_ts"].str.split_exact(".", 1).struct.unnest()
    sec, fr = parts["field_0"].cast(pl.Int64), parts["field_1"]
    ts = pl.select(pl.when(fr.is_null()).then(sec).otherwise(
        sec * 1_000_000_000 + fr.str.pad_end(9, "0").str.slice(0, 9).cast(pl.Int64))).to_series()
    ok_np = ok.to_numpy()
    mask = np.zeros(len(ascii_rows), dtype=bool)
    mask[np.flatnonzero(ascii_rows)[ok_np]] = True
    frame = out.select(pl.Series("line_no", (rows[ok_np] + 1).astype(np.uint32)), "comm", "pid", "cpu", "flags",
                       ts.alias("ts"), fr.str.len_chars().fill_null(0).cast(pl.Int8).alias("ts_frac"), "event",
                       "info")
    if buffer is not None:
        frame = frame.with_columns(buffer.filter(pl.Series(ok_np)).alias("buffer"))
    return mask, frame


def _hex16(chars: np.ndarray) -> np.ndarray | None:
    """Rows of 16 hex digits (an (n, 16) uint8 matrix) → their UInt64 values (a table lookup per character, two
    nibbles per byte, eight bytes viewed big-endian); None when some character is not a hex digit."""
    nib = HEX_DIGIT[chars]
    if (nib == 255).any():
        return None
    by = (nib[:, 0::2] << 4) | nib[:, 1::2]
    return np.ascontiguousarray(by).view(">u8").ravel().astype(np.uint64)


def frames(t: Text, rows: np.ndarray, owner: np.ndarray) -> pl.DataFrame | None:
    """``owner, callers, caller`` of trace-cmd frame lines ``=> sym (16 hex digits)``, grouped by their owner line
    number (``owner`` sorted, one per frame line); None when some line has another form."""
    s, e = t.starts[rows], t.ends[rows]
    n = len(rows)
    if n == 0 or not (e - s >= 3 + 19).all():
        return None
    b = t.b
    c0, c1, c2 = (c[rows] for c in first_bytes(t))
    if not ((c0 == 61) & (c1 == 62) & (c2 == _SP)).all():
        return None
    tail = np.lib.stride_tricks.sliding_window_view(b, 19)[e - 19]        # " (" 16 hex digits ")"
    if not ((tail[:, 0] == _SP) & (tail[:, 1] == 40) & (tail[:, 18] == 41)).all():
        return None
    addr = _hex16(tail[:, 2:18])
    if addr is None:
        return None
    sym_b, sym_e = s + 3, e - 19
    head = np.lib.stride_tricks.sliding_window_view(b, 2)[sym_b]
    null = (sym_e <= sym_b) | ((head[:, 0] == 48) & (head[:, 1] == ord("x")) & (sym_e > sym_b + 1))
    syms = t.arrow(sym_b, sym_e, null)
    cut = np.flatnonzero(np.diff(owner)) + 1
    offsets = np.concatenate([[0], cut, [n]]).astype(np.int64)
    owners = owner[offsets[:-1]]
    callers = pa.LargeListArray.from_arrays(pa.array(offsets), syms)
    caller = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(addr))
    return pl.DataFrame({
        "owner": pl.Series(owners, dtype=pl.UInt32).set_sorted(),
        "callers": pl.Series(values=pl.from_arrow(callers), dtype=pl.List(pl.String)),
        "caller": pl.Series(values=pl.from_arrow(caller), dtype=pl.List(pl.UInt64)),
    })


def attach(t: Text, rows: np.ndarray, ev_line_no: np.ndarray, ev_is_stack: np.ndarray
           ) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """Give each frame line (``rows``, indices into the lines) to the event line above it, as
    :func:`._lines.attach_stacks` does; None when some owned frame line is not in the ``=> sym (addr)`` form."""
    # the event line above each frame line: a running maximum of event indices over all lines
    mark = np.full(len(t), -1, dtype=np.int64)
    mark[ev_line_no.astype(np.int64) - 1] = np.arange(len(ev_line_no))
    at = np.maximum.accumulate(mark)[rows]
    ok = at >= 0
    if len(ev_line_no):
        ok &= ev_is_stack[np.where(ok, at, 0)]
    own = np.flatnonzero(ok)
    out = frames(t, rows[own], ev_line_no[at[own]])
    if out is None and len(own):
        return None
    if out is None:
        out = pl.DataFrame(schema={"owner": pl.UInt32, "callers": pl.List(pl.String), "caller": pl.List(pl.UInt64)})
    bad = rows[~ok]
    orphans = pl.DataFrame({"line_no": (bad + 1).astype(np.uint32), "line": t.strings(t.starts[bad], t.ends[bad])})
    return out, orphans
