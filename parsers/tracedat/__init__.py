"""trace-cmd's trace.dat, file format v6 and v7, into a :class:`tracekit.Trace`.

Implements trace-cmd.dat.v6(5) and trace-cmd.dat.v7(5) (trace-cmd 3.x, Documentation/trace-cmd/): little- and
big-endian files, 4- and 8-byte longs, the page size from the file, v7 sections (none/zlib/zstd), every option,
several buffers (instances), and the Linux ring-buffer page format (kbuffer-parse.c). Timestamps are what
``trace-cmd report`` prints: the raw clock, TSC2NSEC applied when the file has it, plus DATE/OFFSET options.

Frames: one per ``system:event``, columns ``ts`` Int64, ``cpu`` Int32, ``buffer`` String (only when the file holds
more than one buffer), ``common_pid``/``common_flags``/``common_preempt_count`` (the kernel's widths),
``common_comm`` (from the saved cmdlines, ``<idle>`` for pid 0, null when unknown), then every field of the format.
ftrace's ``kernel_stack`` holds all ``size`` callers in ``caller`` plus their symbol names in ``callers``;
``bprint`` gets a ``text`` column decoded through the printk formats. An event field named like a common column
(``ts``, ``cpu``, ``buffer``) is renamed ``<name>_``.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import sys
from dataclasses import dataclass

import numpy as np
import polars as pl

from tracekit.errors import ParseError, TracekitError, UnsupportedFormatError
from tracekit.formats import EventFormat, parse_format, parse_header_page
from tracekit.model import LOST_MARKS_SCHEMA, LOST_SCHEMA, Trace
from tracekit.symbols import Kallsyms

from . import layout as L
from .frames import _State, frame_from_records
from .pages import build_pageset, pageset_bytes, walk
from .records import EventRecords, count, gather_events, page_buffer
from .sections import Blob, FileInfo, cpu_chunks, fill_chunks, read_info

__all__ = ["sniff", "read"]

_NS_CLOCKS = ("local", "global", "uptime", "perf", "mono", "mono_raw", "boot", "tai", "tsc2nsec")
_TS_CHUNK = 1 << 20
_PRINTK = re.compile(r"^\s*(0x[0-9a-fA-F]+)\s*:\s*\"(.*)\"\s*$", re.M)
try:
    _LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
    _LIBC.malloc_trim  # noqa: B018 - glibc only (musl has none)
except (OSError, AttributeError):
    _LIBC = None


def sniff(head: bytes) -> bool:
    """True when ``head`` starts with the trace.dat magic."""
    return head.startswith(L.MAGIC)


def _num(data: bytes, big: bool) -> int:
    return int.from_bytes(data, "big" if big else "little")


def _cstr(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def _metadata(info: FileInfo) -> dict:
    big = info.big_endian
    md: dict = {
        "version": info.version, "endianness": "big" if big else "little", "long_size": info.long_size,
        "page_size": info.page_size, "compression": info.compression,
        "compression_version": info.compression_version or None, "cpus": info.cpus, "cpustats": [],
        "guests": [], "options": [], "header_page": info.header_page, "header_event": info.header_event,
        "sections": info.sections,
    }
    for oid, data in info.options:
        name = L.OPTION_NAMES.get(oid, f"option_{oid}")
        md["options"].append({"id": oid, "name": name, "data": data})
        if oid in (L.OPT_UNAME, L.OPT_VERSION, L.OPT_DATE, L.OPT_OFFSET, 6, 10, 24):
            key = {L.OPT_VERSION: "tracer_version", 6: "hook", 10: "procmaps", 24: "last_boot_info"}.get(oid, name)
            md[key] = _cstr(data)
        elif oid == L.OPT_CPUSTAT:
            md["cpustats"].append(_cstr(data))
        elif oid == L.OPT_TRACECLOCK:
            text = _cstr(data)
            md["trace_clocks"] = text.split()
            m = re.search(r"\[(\S+)\]", text)
            if m:
                md.setdefault("clock", m.group(1))
        elif oid == L.OPT_CPUCOUNT and len(data) >= 4:
            md["cpus"] = _num(data[:4], big)
        elif oid == L.OPT_TRACEID and len(data) >= 8:
            md["trace_id"] = _num(data[:8], big)
        elif oid == L.OPT_TSC2NSEC and len(data) >= 16:
            r = np.frombuffer(data[:16], L.order(L.TSC2NSEC, big))[0]
            md["tsc2nsec"] = {"mult": int(r["mult"]), "shift": int(r["shift"]), "offset": int(r["offset"])}
        elif oid == L.OPT_TIME_SHIFT and len(data) >= 16:
            md["time_shift"] = {"peer_trace_id": _num(data[:8], big), "flags": _num(data[8:12], big),
                                "cpus": _num(data[12:16], big), "raw": data}
        elif oid == L.OPT_GUEST:
            md["guests"].append(_guest(data, big))
    top = next((b for b in info.buffers if b.name == ""), info.buffers[0] if info.buffers else None)
    if top is not None and top.clock:
        md["clock"] = top.clock
    md["buffers"] = [{"name": b.name, "clock": b.clock, "page_size": b.page_size or info.page_size,
                      "cpus": len(b.cpus), "latency": b.latency} for b in info.buffers]
    md.setdefault("clock", None)
    ns = md["clock"] in _NS_CLOCKS or (md["clock"] or "").startswith("mono") or "tsc2nsec" in md
    md["ts_unit"] = "ns" if ns else "raw clock"
    return md


def _guest(data: bytes, big: bool) -> dict:
    name = _cstr(data)
    p = len(name.encode()) + 1
    out = {"name": name}
    if len(data) >= p + 12:
        out["trace_id"] = _num(data[p:p + 8], big)
        n = _num(data[p + 8:p + 12], big)
        pairs = data[p + 12:p + 12 + 8 * n]
        out["vcpus"] = [(_num(pairs[i:i + 4], big), _num(pairs[i + 4:i + 8], big)) for i in range(0, len(pairs) - 7, 8)]
    return out


def _ts_offset(md: dict) -> int:
    off = 0
    for o in md["options"]:
        try:
            if o["id"] == L.OPT_DATE:  # microseconds between trace clock and gettimeofday (trace-input.c)
                off += int(_cstr(o["data"]), 0) * 1000
            elif o["id"] == L.OPT_OFFSET:
                off += int(_cstr(o["data"]), 0)
        except ValueError:
            continue
    return off


def _to_ns(raw: np.ndarray, md: dict, out: np.ndarray | None = None) -> np.ndarray:
    """trace-input.c timestamp_calc(): ``mul_u64_u32_shr`` by TSC2NSEC, then the DATE/OFFSET offset; Int64
    (written into ``out``, a uint64 array that may be ``raw`` itself)."""
    out = np.empty(len(raw), np.uint64) if out is None else out
    t = md.get("tsc2nsec")
    off = np.uint64(_ts_offset(md) % (1 << 64))
    for a in range(0, len(raw), _TS_CHUNK):  # in row chunks: temporaries of one chunk, not of the column
        ts = raw[a:a + _TS_CHUNK].astype(np.uint64)
        if t and t["mult"]:
            mult, shift = np.uint64(t["mult"]), t["shift"]
            lo = (ts & np.uint64(0xFFFFFFFF)) * mult >> np.uint64(shift)
            hi = (ts >> np.uint64(32)) * mult
            ts = lo + ((hi << np.uint64(32 - shift)) if shift <= 32 else (hi >> np.uint64(shift - 32)))
        np.add(ts, off, out=out[a:a + _TS_CHUNK])
    return out.view(np.int64)


def _cmdlines(text: str) -> tuple[np.ndarray, list[str]]:
    pids, names = [], []
    for line in text.splitlines():
        pid, _, comm = line.strip().partition(" ")
        if pid.lstrip("-").isdigit():
            pids.append(int(pid))
            names.append(comm)
    return np.array(pids, np.int64), names


def read(source: str | os.PathLike, *, buffer: str | None = None, progress=None, **_options) -> Trace:
    """Read a trace.dat (v6 or v7) into a :class:`~tracekit.Trace`.

    Args:
        source: the file.
        buffer: read only this instance ("" = the top buffer); default: every buffer, as ``trace-cmd report``.
        progress: called as ``progress(done, total)`` with bytes of CPU data decoded.

    Returns:
        A Trace whose frames are built on first use (``counts_hint`` gives the counts without building them).

    Raises:
        UnsupportedFormatError: not a trace.dat, or an unknown version or compression.
        ParseError: metadata damaged or truncated (a damaged data page is only recorded in ``Trace.damage``).
    """
    path = os.fspath(source)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise UnsupportedFormatError(path, "empty file: expected a trace.dat", 0)
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise ParseError(path, None, "a readable file", exc.strerror) from exc
    try:
        return _read(mm, path, buffer, progress)
    except TracekitError:
        raise
    except (ValueError, IndexError, OverflowError, MemoryError, UnicodeError) as exc:
        raise ParseError(path, None, "a consistent trace.dat", f"{type(exc).__name__}: {exc}") from exc


@dataclass
class _Context:
    """What every reader of one file needs before its CPU data: the parsed header sections and the chosen buffers."""

    info: FileInfo
    md: dict
    long_size: int
    index: _FormatIndex
    kallsyms: _LazyKallsyms | None
    printk: dict[int, str]
    pids: np.ndarray
    comms: list[str]
    tables: dict[str, pl.DataFrame]
    buffers: list


def _context(mm, path: str, buffer: str | None) -> _Context:
    """Parse the file's header sections and select the buffers to read (all but latency buffers, or ``buffer``).

    Raises:
        UnsupportedFormatError: ``buffer`` is not in the file.
    """
    info = read_info(mm, path)
    md = _metadata(info)
    hp = parse_header_page(info.header_page)
    long_size = hp["commit"].size if "commit" in hp and hp["commit"].size in (4, 8) else info.long_size
    md["kernel_long_size"] = long_size
    index = _FormatIndex(path, [("ftrace", t) for t in info.ftrace_formats] + info.event_formats)
    kallsyms = _LazyKallsyms(info.kallsyms, path) if info.kallsyms.strip() else None
    printk = {int(a, 16): f for a, f in _PRINTK.findall(info.printk)}
    md["printk_formats"] = printk
    pids, comms = _cmdlines(info.cmdlines)
    tables = {"cmdlines": pl.DataFrame({"pid": pl.Series(pids, dtype=pl.Int32), "comm": pl.Series(comms,
                                                                                                 dtype=pl.String)})}
    buffers = [b for b in info.buffers if not b.latency]
    if buffer is not None:
        buffers = [b for b in buffers if b.name == buffer]
        if not buffers:
            names = [b.name for b in info.buffers]
            raise UnsupportedFormatError(path, f"no buffer {buffer!r} in this file (buffers: {names})")
    return _Context(info, md, long_size, index, kallsyms, printk, pids, comms, tables, buffers)


def _read(mm, path: str, buffer: str | None, progress) -> Trace:
    ctx = _context(mm, path, buffer)
    info, md, long_size, index, kallsyms, printk = ctx.info, ctx.md, ctx.long_size, ctx.index, ctx.kallsyms, ctx.printk
    pids, comms, tables, buffers = ctx.pids, ctx.comms, ctx.tables, ctx.buffers
    damage: list[ParseError] = []
    blob = Blob(mm, path, info.big_endian)
    total = sum(c.size for b in buffers for c in b.cpus) or 1
    done = 0
    cols, lost_rows, marks = [], [], []
    plans = []
    for g, b in enumerate(buffers):
        parts = []
        for c in b.cpus:
            try:
                chunks = cpu_chunks(blob, info, b, c)
            except ParseError as exc:
                damage.append(exc)
                continue
            parts.append((g, c.cpu, chunks, c.offset, b.compressed))
        plans.append((b.page_size or info.page_size, parts))
    # every buffer's pages in one allocation: each buffer fills its own slice, nothing is concatenated afterwards
    room = [pageset_bytes(parts, page_size) for page_size, parts in plans]
    buf, release = page_buffer(sum(room) + 16)

    def fill(chunks, dest, compressed):
        nonlocal done
        fill_chunks(blob, info, chunks, dest, compressed)
        done += sum(ch[1] for ch in chunks)
        if progress is not None:
            progress(done, total)

    base = npages = 0
    pages = []
    for (page_size, parts), n in zip(plans, room, strict=True):
        ps = build_pageset(parts, page_size, path, damage, fill, buf[base:])
        recs = walk(ps, page_size, long_size, info.big_endian, path)
        damage.extend(recs.damage)
        if base:
            recs.data += base
        pages.append((ps.starts + base, ps.starts + base + page_size, ps.cpu, ps.group))
        lost_rows.append((ps.cpu, ps.group, recs.lost))
        if recs.lost.any():
            marks.append(_lost_marks(ps, recs, md, info.big_endian))
        # raw clock to ns in place: the raw values are not needed any more
        cols.append((recs.data, recs.length, _to_ns(recs.ts, md, out=recs.ts),
                     recs.page + npages if npages else recs.page))
        npages += len(ps.starts)
        del recs, ps
        base += n
    cols = [list(c) for c in cols if len(c[0])] or [[np.zeros(0, np.int64)] * 4]
    joined = []
    for i in range(4):  # column by column, each buffer's piece freed once joined (no second copy of them all)
        joined.append(cols[0][i] if len(cols) == 1 else np.concatenate([c[i] for c in cols]))
        for c in cols:
            c[i] = None
    data, length, ts, page = joined
    del cols, joined
    starts, ends, page_cpu, page_group = (np.concatenate([p[i] for p in pages]) if pages else np.zeros(0, np.int64)
                                          for i in range(4))
    u32 = buf[: len(buf) // 4 * 4].view(">u4" if info.big_endian else "<u4")
    ids = np.empty(len(data), np.uint16)
    for a in range(0, len(data), _TS_CHUNK):  # common_type, the payload's first 16 bits
        word = u32[data[a:a + _TS_CHUNK] >> 2]
        ids[a:a + _TS_CHUNK] = (word >> 16) if info.big_endian else (word & 0xFFFF)
    ids[length < 2] = 0xFFFF
    del u32
    lost = _lost_frame(lost_rows, buffers)
    names = pl.Series([b.name for b in buffers], dtype=pl.String)
    tables["lost_marks"] = (pl.concat(marks) if marks else pl.DataFrame(schema={**LOST_MARKS_SCHEMA, "g": pl.Int16}))
    if len(buffers) > 1:
        tables["lost_marks"] = tables["lost_marks"].with_columns(buffer=names.gather(tables["lost_marks"]["g"]))
    tables["lost_marks"] = tables["lost_marks"].drop("g")
    fmts = {}
    per_id = count(ids, 1 << 16)
    for eid in np.flatnonzero(per_id):
        fmt = index.parse(int(eid), damage)
        if fmt is None:
            damage.append(ParseError(path, None, "records whose common_type has an event format",
                                     f"{per_id[eid]} records of unknown type {eid}"))
        else:
            fmts[int(eid)] = fmt
    # each event's records copied out in time order while the page buffer is handed back page by page
    chunks = gather_events(buf[: len(buf) // 4 * 4].view(np.uint32), release, starts, ends, data, length, ts, page,
                           ids, fmts)
    del data, length, ts, page, ids, buf, release, starts, ends
    _trim()
    st = _State(path, None, info.big_endian, long_size, pids, comms, [b.name for b in buffers], kallsyms, printk)
    page_cpu, page_group = page_cpu.astype(np.int16), page_group.astype(np.int16)
    frames = {fmts[eid].full_name: _builder(st, fmts[eid], EventRecords(chunks.pop(eid), page_cpu, page_group))
              for eid in sorted(fmts)}
    counts = {fmts[eid].full_name: int(per_id[eid]) for eid in sorted(fmts)}
    md["events"] = int(sum(counts.values()))
    return Trace(source=path, format="trace.dat", frames=frames, metadata=md, formats=index.by_name(),
                 lost_events=lost, kallsyms=kallsyms, damage=damage, tables=tables, counts_hint=counts)


def _trim() -> None:
    """Hand the heap's freed pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere): the builders' large
    temporaries otherwise leave free holes that the next, bigger frame cannot reuse."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _builder(st: _State, fmt: EventFormat, rec: EventRecords):
    """A zero-argument frame builder; it drops the event's records as it builds, so a fully read trace holds its
    frames, not the raw data."""
    box: dict = {"arrays": rec}

    def build() -> pl.DataFrame:
        if "df" not in box:
            if "arrays" not in box:
                raise box["error"]
            try:
                box["df"] = frame_from_records(st, fmt, box.pop("arrays"))
            except TracekitError as exc:
                box["error"] = exc
                raise
            except (ValueError, IndexError, OverflowError, MemoryError, UnicodeError, pl.exceptions.PolarsError) \
                    as exc:
                box["error"] = ParseError(st.path, None, f"decodable {fmt.full_name} records",
                                          f"{type(exc).__name__}: {exc}")
                raise box["error"] from exc
            _trim()
        return box["df"]

    return build


class _LazyKallsyms(Kallsyms):
    """The file's kallsyms, parsed on first use (5 MB of text on a typical host; most readers never need it)."""

    def __init__(self, text: str, path: str):  # noqa: D107 - Kallsyms.__init__ runs on first use
        self._text = text
        self._path = path
        self._by_name = None

    def __getattr__(self, name: str):
        if name in ("addrs", "names", "types", "modules"):
            try:
                full = Kallsyms.parse(self._text, self._path)
            except ParseError:
                full = Kallsyms(np.zeros(0, np.uint64), np.zeros(0, object))
            self.addrs, self.names, self.types, self.modules = full.addrs, full.names, full.types, full.modules
            return getattr(self, name)
        raise AttributeError(name)


_NAME = re.compile(r"^name:\s*(\S+)", re.M)
_ID = re.compile(r"^ID:\s*(\d+)", re.M)


class _FormatIndex:
    """Event format texts indexed by ID and name; each is parsed on first use (a file holds ~2000 formats)."""

    def __init__(self, path: str, texts: list[tuple[str, str]]):
        self.path = path
        self.by_id: dict[int, tuple[str, str]] = {}
        self.names: dict[str, tuple[str, str]] = {}
        self.parsed: dict[int, EventFormat | None] = {}
        for system, text in texts:
            n, i = _NAME.search(text), _ID.search(text)
            if n and i:
                self.by_id[int(i.group(1))] = (system, text)
                self.names[f"{system}:{n.group(1)}"] = (system, text)

    def parse(self, eid: int, damage: list | None = None) -> EventFormat | None:
        if eid not in self.parsed:
            fmt = None
            if eid in self.by_id:
                system, text = self.by_id[eid]
                try:
                    fmt = parse_format(text, system, path=self.path)
                except ParseError as exc:
                    if damage is not None:
                        damage.append(exc)
            self.parsed[eid] = fmt
        return self.parsed[eid]

    def by_name(self) -> dict[str, EventFormat]:
        return _LazyFormats(self)


class _LazyFormats(dict):
    """``Trace.formats``: every event format of the file by ``system:event``, parsed when first looked up."""

    def __init__(self, index: _FormatIndex):
        super().__init__()
        self._index = index
        self._keys = list(index.names)

    def _load(self, key: str) -> EventFormat | None:
        if not dict.__contains__(self, key):
            system, text = self._index.names[key]
            try:
                dict.__setitem__(self, key, parse_format(text, system, path=self._index.path))
            except ParseError:
                return None
        return dict.__getitem__(self, key)

    def __getitem__(self, key):
        if key not in self._index.names or self._load(key) is None:
            raise KeyError(key)
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return key in self._index.names

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self):
        return list(self._keys)

    def items(self):
        return [(k, v) for k in self._keys if (v := self.get(k)) is not None]

    def values(self):
        return [v for _, v in self.items()]


def _lost_marks(ps, recs, md: dict, big_endian: bool) -> pl.DataFrame:
    """One row per page whose ``commit`` carries the missed-events flag: where in time the loss sits on its CPU.

    ``ts`` is the page's first event (the page header's timestamp when the page holds none) and ``prev_ts`` the last
    event before it on the same buffer and CPU; the events lost fell between the two."""
    npages = len(ps.starts)
    counts = np.bincount(recs.page, minlength=npages)
    first = np.searchsorted(recs.page, np.arange(npages), side="left")
    ts = _to_ns(recs.ts, md)
    has = counts > 0
    first_ts = np.where(has, ts[np.minimum(first, max(len(ts) - 1, 0))] if len(ts) else 0, 0)
    last_ts = np.where(has, ts[np.maximum(first + counts - 1, 0)] if len(ts) else 0, 0)
    # a page without records still has its header timestamp (the time of its first write)
    hdr = ps.buf[(ps.starts[:, None] + np.arange(8)).ravel()].view(">u8" if big_endian else "<u8")
    first_ts = np.where(has, first_ts, _to_ns(hdr, md))
    df = pl.DataFrame({"g": pl.Series(ps.group, dtype=pl.Int16), "cpu": pl.Series(ps.cpu, dtype=pl.Int32),
                       "ts": first_ts, "last": pl.Series(np.where(has, last_ts, 0)).set(pl.Series(~has), None),
                       "lost_raw": recs.lost})
    df = df.with_columns(prev_ts=pl.col("last").shift(1).forward_fill().over(["g", "cpu"]))
    return (df.filter(pl.col("lost_raw") != 0)
            .select("g", "cpu", pl.col("ts").cast(pl.Int64), pl.col("prev_ts").cast(pl.Int64),
                    lost=pl.when(pl.col("lost_raw") > 0).then(pl.col("lost_raw")).otherwise(0).cast(pl.Int64),
                    lost_unknown=(pl.col("lost_raw") < 0).cast(pl.Int64)))


def _lost_frame(rows, buffers) -> pl.DataFrame:
    """Per (buffer, CPU): events reported lost with a count, and pages that said "lost" without one."""
    multi = len(buffers) > 1
    schema = dict(LOST_SCHEMA)
    if multi:
        schema["buffer"] = pl.String
    cpu = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int32)
    if not len(cpu):
        return pl.DataFrame(schema=schema)
    g = np.concatenate([r[1] for r in rows])
    lost = np.concatenate([r[2] for r in rows])
    names = pl.Series([b.name for b in buffers], dtype=pl.String)
    df = pl.DataFrame({"cpu": pl.Series(cpu, dtype=pl.Int32), "g": g,
                       "lost": np.where(lost > 0, lost, 0), "lost_unknown": (lost < 0).astype(np.int64)})
    df = df.group_by(["g", "cpu"]).agg(pl.col("lost").sum().cast(pl.Int64), pl.col("lost_unknown").sum()
                                       .cast(pl.Int64)).filter((pl.col("lost") > 0) | (pl.col("lost_unknown") > 0))
    df = df.sort(["g", "cpu"]).with_columns(buffer=names.gather(df.sort(["g", "cpu"])["g"]))
    return df.select(list(schema))
