"""Write trace.dat files (trace-cmd file format versions 6 and 7) from Polars frames and real event formats.

Implements trace-cmd.dat.v6(5) and trace-cmd.dat.v7(5) (trace-cmd 3.x, little-endian, 64-bit long) with the Linux
ring-buffer page layout of ``events/header_page`` (``timestamp`` u64, ``commit`` local_t 8 bytes, ``data``) and the
record headers of ``events/header_event`` (``type_len`` 5 bits, ``time_delta`` 27 bits, ``array``). Records are
packed the way ``kernel/trace/ring_buffer.c`` does: ``type_len`` 1..28 for payloads up to 112 bytes, 0 with the
length in ``array[0]`` beyond; a TIME_EXTEND record (type 30) before an event whose delta does not fit in 27 bits;
where the next event does not fit a page, ``commit`` stops at the last event (``real_end``: what
``ring_buffer_read_page`` hands to trace-cmd) or, with ``padding_events=True``, covers a padding record (type 29,
``rb_reset_tail``) up to the page end, as pages inside the kernel hold; ``RB_MISSED_EVENTS`` (bit 31 of ``commit``) on
the page after lost events, and ``RB_MISSED_STORED`` (bit 30) with the count stored after the data when known.

The files are for tests, samples and benchmarks: ``trace-cmd report`` reads them without a warning and prints
exactly the written events (``tests/testing/test_tracedat_writer.py`` checks it field by field).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..errors import ConfigError
from ..formats import EventFormat, builtin_formats
from ._records import encode

__all__ = ["write_tracedat", "LostEvents", "header_texts", "trace_inputs"]

# --- binary layouts (little-endian; trace-cmd.dat.v6(5)/v7(5), include/linux/ring_buffer.h) -------------------
MAGIC = b"\x17\x08\x44tracing"
PAGE_HEADER = np.dtype([("timestamp", "<u8"), ("commit", "<i8")])
SECTION_HEADER = np.dtype([("id", "<u2"), ("flags", "<u2"), ("description", "<u4"), ("size", "<u8")])
COMPRESSED_BLOCK = np.dtype([("compressed_size", "<u4"), ("size", "<u4")])

TYPE_LEN_MAX_DATA = 28          # type_len 1..28: payload of type_len * 4 bytes
RINGBUF_TYPE_PADDING = 29
RINGBUF_TYPE_TIME_EXTEND = 30
TS_SHIFT = 27
TS_MASK = (1 << TS_SHIFT) - 1
RB_MISSED_EVENTS = 1 << 31
RB_MISSED_STORED = 1 << 30
RB_EVNT_MIN_SIZE = 8

# trace-cmd option and section ids (trace-cmd.dat.v7(5) "OPTIONS SECTION")
OPTION_DONE = 0
OPTION_BUFFER = 3
OPTION_TRACECLOCK = 4
OPTION_UNAME = 5
OPTION_CPUCOUNT = 8
OPTION_VERSION = 9
SECTION_STRINGS = 15
SECTION_HEADER_INFO = 16
SECTION_FTRACE_EVENTS = 17
SECTION_EVENT_FORMATS = 18
SECTION_KALLSYMS = 19
SECTION_PRINTK = 20
SECTION_CMDLINES = 21
SEC_FL_COMPRESS = 1
PAGES_IN_CHUNK = 10             # trace-cmd's chunk of compressed trace data

CLOCKS = ("local", "global", "counter", "uptime", "perf", "mono", "mono_raw", "boot", "tai", "x86-tsc")
DEFAULT_UNAME = "Linux kvm-host 6.18.0-tracekit x86_64"
WRITER_VERSION = "tracekit-writer 1"


@dataclass(frozen=True)
class LostEvents:
    """Events the ring buffer dropped on ``cpu`` just before its first event at or after ``before_ts``.

    Attributes:
        cpu: the CPU whose buffer overflowed.
        before_ts: the page holding the first event with ``ts >= before_ts`` carries the missed-events flag.
        count: how many were lost (stored after the page data), or None for "some" (flag only).
    """

    cpu: int
    before_ts: int
    count: int | None = None


def header_texts() -> tuple[str, str]:
    """The ``header_page`` and ``header_event`` texts of the bundled Linux 6.18 formats."""
    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "formats", "linux-6.18")
    with open(os.path.join(root, "header_page")) as f:
        page = f.read()
    with open(os.path.join(root, "header_event")) as f:
        event = f.read()
    return page, event


# --- page packing ------------------------------------------------------------------------------------------------
def _pack_cpu(ts: np.ndarray, lengths: np.ndarray, payload_of, lost_at: dict[int, int | None],
              page_size: int, padding_events: bool = False) -> bytes:
    """Pack one CPU's records (sorted by ``ts``) into ring-buffer pages.

    Args:
        ts: timestamps (ns) of the records, non-decreasing.
        lengths: payload byte length of each record (a multiple of 4).
        payload_of: callable(dest uint32 view, word offsets) that copies every payload to its word offset.
        lost_at: record index → lost count (None = unknown) for pages that start after lost events.
        page_size: the ring-buffer page size (header included).
        padding_events: end full pages with a committed padding record instead of at the last event.
    """
    n = len(ts)
    data_cap = page_size - PAGE_HEADER.itemsize
    delta = np.zeros(n, dtype=np.int64)
    delta[1:] = np.diff(ts)
    if n and (delta < 0).any():
        raise ConfigError("events of one CPU must have non-decreasing timestamps")
    big = lengths > TYPE_LEN_MAX_DATA * 4
    ext = np.where(delta > TS_MASK, 8, 0).astype(np.int64)
    size = 4 + lengths + np.where(big, 4, 0) + ext
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(size, out=cum[1:])
    breaks = sorted(lost_at)
    first_on_page = np.zeros(n, dtype=bool)
    starts, ends, commits, pad = [], [], [], []
    a = 0
    bi = 0
    while a < n:
        stored = a in lost_at and lost_at[a] is not None
        cap = data_cap - (8 if stored else 0)
        limit = cum[a] + ext[a] + cap
        b = int(np.searchsorted(cum, limit, side="right")) - 1
        while bi < len(breaks) and breaks[bi] <= a:
            bi += 1
        forced = breaks[bi] if bi < len(breaks) else n
        if b <= a:
            raise ConfigError(f"a record of {int(lengths[a])} bytes does not fit a {page_size}-byte page")
        b = min(b, forced, n)
        used = int(cum[b] - cum[a] - ext[a])
        starts.append(a)
        ends.append(b)
        full = b < n and b != forced and not stored
        pad.append(cap - used if full else 0)
        commits.append(used)
        first_on_page[a] = True
        a = b
    npages = len(starts)
    out = np.zeros(npages * page_size, dtype=np.uint8)
    words = out.view("<u4")
    # byte offset of every record inside the file image
    page_of = np.repeat(np.arange(npages), np.asarray(ends) - np.asarray(starts))
    starts_arr = np.asarray(starts, dtype=np.int64)
    off = page_of * page_size + PAGE_HEADER.itemsize + (cum[:-1] - cum[starts_arr][page_of]
                                                         - ext[starts_arr][page_of])
    off[starts_arr] = np.arange(npages) * page_size + PAGE_HEADER.itemsize   # its TIME_EXTEND is dropped
    ext_here = np.where(first_on_page, 0, ext)
    d = np.where(first_on_page, 0, delta)
    # TIME_EXTEND records: type_len 30, low 27 bits in time_delta, the rest in array[0]
    e = np.flatnonzero(ext_here > 0)
    words[off[e] // 4] = (RINGBUF_TYPE_TIME_EXTEND | ((d[e] & TS_MASK) << 5)).astype(np.uint32)
    words[off[e] // 4 + 1] = (d[e] >> TS_SHIFT).astype(np.uint32)
    d[e] = 0
    hdr = off + ext_here
    tl = np.where(big, 0, lengths // 4)
    words[hdr // 4] = (tl | (d << 5)).astype(np.uint32)
    bigi = np.flatnonzero(big)
    words[hdr[bigi] // 4 + 1] = (lengths[bigi] + 4).astype(np.uint32)
    data_off = hdr + 4 + np.where(big, 4, 0)
    payload_of(words, data_off // 4)
    header = np.zeros(npages, dtype=PAGE_HEADER)
    header["timestamp"] = ts[starts_arr]
    commit = np.asarray(commits, dtype=np.int64)
    for p, (s, padding) in enumerate(zip(starts, pad, strict=True)):
        base = p * page_size + PAGE_HEADER.itemsize
        if not padding_events:
            pass
        elif padding >= RB_EVNT_MIN_SIZE:      # kernel rb_reset_tail: a discarded event up to the page end
            words[(base + commit[p]) // 4] = RINGBUF_TYPE_PADDING | (1 << 5)
            words[(base + commit[p]) // 4 + 1] = padding - 4
            commit[p] += padding
        elif padding:                        # no room for an event: bare padding header, not committed
            words[(base + commit[p]) // 4] = RINGBUF_TYPE_PADDING
        if s in lost_at:
            count = lost_at[s]
            flags = RB_MISSED_EVENTS
            if count is not None:
                cpos = base + commit[p]
                out[cpos:cpos + 8] = np.frombuffer(np.uint64(count).astype("<u8").tobytes(), dtype=np.uint8)
                flags |= RB_MISSED_STORED
            commit[p] |= flags
    header["commit"] = commit
    hview = out.reshape(npages, page_size)
    hview[:, : PAGE_HEADER.itemsize] = header.view(np.uint8).reshape(npages, PAGE_HEADER.itemsize)
    return out.tobytes()


def _cpu_images(events: Mapping[str, pl.DataFrame], formats: Mapping[str, EventFormat], cpus: int,
                lost: Iterable[LostEvents], page_size: int, padding_events: bool = False) -> list[bytes]:
    ts_parts, cpu_parts, seq_parts, len_parts, blk_parts, row_parts = [], [], [], [], [], []
    blocks: list[np.ndarray] = []
    seq_base = 0
    for name, df in events.items():
        if df.height == 0:
            continue
        fmt = formats.get(name)
        if fmt is None:
            raise ConfigError(f"no format for event {name!r}")
        for col in ("ts", "cpu"):
            if col not in df.columns:
                raise ConfigError(f"frame {name!r} lacks the {col!r} column")
        seq = (df.get_column("seq").to_numpy().astype(np.int64) if "seq" in df.columns
               else seq_base + np.arange(df.height, dtype=np.int64))
        seq_base += df.height
        ts_all = df.get_column("ts").to_numpy().astype(np.int64)
        cpu_all = df.get_column("cpu").to_numpy().astype(np.int64)
        for rows, recs in encode(fmt, df):
            blocks.append(recs)
            ts_parts.append(ts_all[rows])
            cpu_parts.append(cpu_all[rows])
            seq_parts.append(seq[rows])
            len_parts.append(np.full(len(rows), recs.shape[1], dtype=np.int64))
            blk_parts.append(np.full(len(rows), len(blocks) - 1, dtype=np.int64))
            row_parts.append(np.arange(len(rows), dtype=np.int64))
    if not ts_parts:
        return [b""] * cpus
    ts = np.concatenate(ts_parts)
    cpu = np.concatenate(cpu_parts)
    if (cpu < 0).any() or (cpu >= cpus).any():
        raise ConfigError(f"event cpu outside 0..{cpus - 1}")
    if (ts < 0).any():
        raise ConfigError("negative timestamp")
    seq = np.concatenate(seq_parts)
    lengths = np.concatenate(len_parts)
    blk = np.concatenate(blk_parts)
    row = np.concatenate(row_parts)
    order = np.lexsort((seq, ts, cpu))
    lost_by_cpu: dict[int, list[LostEvents]] = {}
    for mark in lost:
        lost_by_cpu.setdefault(mark.cpu, []).append(mark)
    images = []
    for c in range(cpus):
        sel = order[cpu[order] == c]
        cts = ts[sel]
        lost_at: dict[int, int | None] = {}
        for mark in lost_by_cpu.get(c, []):
            i = int(np.searchsorted(cts, mark.before_ts, side="left"))
            if i >= len(cts):
                raise ConfigError(f"lost events on cpu {c} at {mark.before_ts} have no later event to carry the flag")
            prev = lost_at.get(i, 0)
            lost_at[i] = None if (prev is None or mark.count is None) else prev + mark.count
        if len(sel) == 0:
            images.append(b"")
            continue
        sblk, srow, slen = blk[sel], row[sel], lengths[sel]

        def copy(words: np.ndarray, woff: np.ndarray, sblk=sblk, srow=srow, slen=slen) -> None:
            for b in np.unique(sblk):
                m = np.flatnonzero(sblk == b)
                recs = blocks[b][srow[m]].view("<u4")
                nw = int(slen[m[0]]) // 4
                words[woff[m][:, None] + np.arange(nw)] = recs

        images.append(_pack_cpu(cts, slen, copy, lost_at, page_size, padding_events))
    return images


# --- file sections -----------------------------------------------------------------------------------------------
def _u16(v: int) -> bytes:
    return int(v).to_bytes(2, "little")


def _u32(v: int) -> bytes:
    return int(v).to_bytes(4, "little")


def _u64(v: int) -> bytes:
    return int(v).to_bytes(8, "little")


def _kallsyms_text(kallsyms) -> str:
    if kallsyms is None:
        return ""
    if isinstance(kallsyms, str):
        return kallsyms
    items = kallsyms.items() if isinstance(kallsyms, Mapping) else kallsyms
    rows = sorted((int(a), n) for n, a in items) if isinstance(kallsyms, Mapping) else sorted(
        (int(a), n) for a, n in items)
    return "".join(f"{a:016x} t {n}\n" for a, n in rows)


def _cmdlines_text(cmdlines) -> str:
    if cmdlines is None:
        return ""
    if isinstance(cmdlines, str):
        return cmdlines
    return "".join(f"{int(pid)} {comm}\n" for pid, comm in sorted(dict(cmdlines).items()))


def _metadata(formats: Mapping[str, EventFormat], kallsyms: str, cmdlines: str, printk: str,
              page_size: int = 4096) -> dict[int, bytes]:
    """The metadata blocks shared by v6 (inline) and v7 (one section each)."""
    page, event = header_texts()
    # header_page's data field spans the page after its 16-byte header
    page = re.sub(r"(field: char data;\toffset:16;\tsize:)\d+", lambda m: m.group(1) + str(page_size - 16), page)
    ftrace = [f for f in formats.values() if f.system == "ftrace"]
    systems: dict[str, list[EventFormat]] = {}
    for f in formats.values():
        if f.system != "ftrace":
            systems.setdefault(f.system, []).append(f)
    blob_header = (b"header_page\0" + _u64(len(page)) + page.encode() + b"header_event\0" + _u64(len(event))
                   + event.encode())
    blob_ftrace = _u32(len(ftrace)) + b"".join(_u64(len(t := _fmt_text(f))) + t for f in ftrace)
    parts = [_u32(len(systems))]
    for system, fmts in systems.items():
        parts.append(system.encode() + b"\0" + _u32(len(fmts)))
        parts.extend(_u64(len(t := _fmt_text(f))) + t for f in fmts)
    kall = kallsyms.encode()
    pk = printk.encode()
    cmd = cmdlines.encode()
    return {
        SECTION_HEADER_INFO: blob_header,
        SECTION_FTRACE_EVENTS: blob_ftrace,
        SECTION_EVENT_FORMATS: b"".join(parts),
        SECTION_KALLSYMS: _u32(len(kall)) + kall,
        SECTION_PRINTK: _u32(len(pk)) + pk,
        SECTION_CMDLINES: _u64(len(cmd)) + cmd,
    }


def _fmt_text(f: EventFormat) -> bytes:
    if f.text:
        return f.text.encode()
    raise ConfigError(f"format {f.full_name} has no text to embed")


def _clock_option(clock: str) -> bytes:
    names = list(CLOCKS) if clock in CLOCKS else [*CLOCKS, clock]
    return (" ".join(f"[{c}]" if c == clock else c for c in names) + "\n").encode() + b"\0"


def _option(oid: int, data: bytes) -> bytes:
    return _u16(oid) + _u32(len(data)) + data


def _write_v6(out, meta, images, cpus, page_size, clock, uname) -> None:
    head = bytearray(MAGIC + b"6\0" + bytes([0, 8]) + _u32(page_size))
    for sid in (SECTION_HEADER_INFO, SECTION_FTRACE_EVENTS, SECTION_EVENT_FORMATS, SECTION_KALLSYMS, SECTION_PRINTK,
                SECTION_CMDLINES):
        head += meta[sid]
    head += _u32(cpus)
    head += b"options  \0"
    head += _option(OPTION_TRACECLOCK, _clock_option(clock))
    head += _option(OPTION_UNAME, uname.encode() + b"\0")
    head += _option(OPTION_CPUCOUNT, _u32(cpus))
    head += _option(OPTION_VERSION, WRITER_VERSION.encode() + b"\0")
    head += _u16(OPTION_DONE)
    head += b"flyrecord\0"
    table_at = len(head)
    head += b"\0" * (16 * cpus)
    clock_text = f"[{clock}]".encode()
    head += _u64(len(clock_text)) + clock_text
    pos = len(head)
    body = bytearray()
    for c, img in enumerate(images):
        start = -(-pos // page_size) * page_size
        body += b"\0" * (start - pos)
        head[table_at + 16 * c: table_at + 16 * c + 16] = _u64(start) + _u64(len(img))
        body += img
        pos = start + len(img)
    out.write(bytes(head))
    out.write(bytes(body))


class _V7:
    """Accumulates a v7 file: sections, their string ids, and the options that point at them."""

    def __init__(self, compressor, page_size: int):
        self.buf = bytearray()
        self.strings = bytearray()
        self.string_ids: dict[str, int] = {}
        self.compressor = compressor
        self.page_size = page_size

    def string(self, s: str) -> int:
        if s not in self.string_ids:
            self.string_ids[s] = len(self.strings)
            self.strings += s.encode() + b"\0"
        return self.string_ids[s]

    def section(self, sid: int, description: str, data: bytes, compress: bool = True) -> int:
        at = len(self.buf)
        flags = SEC_FL_COMPRESS if (compress and self.compressor) else 0
        if flags:
            z = self.compressor.compress(data)
            data = _u32(len(z)) + _u32(len(data)) + z
        self.buf += _u16(sid) + _u16(flags) + _u32(self.string(description)) + _u64(len(data)) + data
        return at


def _write_v7(out, meta, images, cpus, page_size, clock, uname, compression) -> None:
    compressor = None
    if compression == "zstd":
        import zstandard

        compressor = zstandard.ZstdCompressor(level=3)
        zname, zver = b"zstd", ".".join(map(str, zstandard.ZSTD_VERSION)).encode()
    else:
        zname, zver = b"none", b""
    w = _V7(compressor, page_size)
    w.buf += MAGIC + b"7\0" + bytes([0, 8]) + _u32(page_size) + zname + b"\0" + zver + b"\0"
    opt_ptr = len(w.buf)
    w.buf += _u64(0)
    names = {SECTION_HEADER_INFO: "headers", SECTION_FTRACE_EVENTS: "ftrace events",
             SECTION_EVENT_FORMATS: "events format", SECTION_KALLSYMS: "kallsyms", SECTION_PRINTK: "printk",
             SECTION_CMDLINES: "command lines"}
    options = bytearray()
    for sid, desc in names.items():
        at = w.section(sid, desc, meta[sid])
        options += _option(sid, _u64(at))
    # BUFFER FLYRECORD section: page-aligned CPU data, chunk-compressed when the file is compressed
    fly_at = len(w.buf)
    flags = SEC_FL_COMPRESS if compressor else 0
    w.buf += _u16(OPTION_BUFFER) + _u16(flags) + _u32(w.string("buffer flyrecord ")) + _u64(0)
    size_at = len(w.buf) - 8
    cpu_entries = []
    for c, img in enumerate(images):
        if not img:
            continue
        start = -(-len(w.buf) // page_size) * page_size
        w.buf += b"\0" * (start - len(w.buf))
        if compressor:
            chunk = PAGES_IN_CHUNK * page_size
            pieces = [img[i:i + chunk] for i in range(0, len(img), chunk)]
            data = bytearray(_u32(len(pieces)))
            for p in pieces:
                z = compressor.compress(p)
                data += _u32(len(z)) + _u32(len(p)) + z
            img = bytes(data)
        w.buf += img
        cpu_entries.append((c, start, len(img)))
    w.buf[size_at:size_at + 8] = _u64(len(w.buf) - size_at - 8)
    buffer_opt = _u64(fly_at) + b"\0" + clock.encode() + b"\0" + _u32(page_size) + _u32(len(cpu_entries))
    buffer_opt += b"".join(_u32(c) + _u64(o) + _u64(n) for c, o, n in cpu_entries)
    options += _option(OPTION_TRACECLOCK, _clock_option(clock))
    options += _option(OPTION_UNAME, uname.encode() + b"\0")
    options += _option(OPTION_CPUCOUNT, _u32(cpus))
    options += _option(OPTION_VERSION, WRITER_VERSION.encode() + b"\0")
    options += _option(OPTION_BUFFER, buffer_opt)
    options += _option(OPTION_DONE, _u64(0))
    w.string("strings")
    opt_at = w.section(OPTION_DONE, "options", bytes(options), compress=False)  # as trace-cmd writes them
    w.buf[opt_ptr:opt_ptr + 8] = _u64(opt_at)
    w.section(SECTION_STRINGS, "strings", bytes(w.strings))
    out.write(bytes(w.buf))


def trace_inputs(trace) -> tuple[dict[str, pl.DataFrame], dict[str, EventFormat], list[tuple[int, str]] | None,
                                 dict[int, str] | None]:
    """The frames, formats, kallsyms and cmdlines of a loaded :class:`tracekit.model.Trace`, as the writer takes
    them."""
    events = {}
    for key in trace.frames:
        df = trace.events(key)
        if "callers" in df.columns:   # resolved names of ``caller`` (which holds all ``size`` addresses)
            df = df.drop("callers")
        events[key] = df
    ks = trace.kallsyms
    kallsyms = None
    if ks is not None and len(ks):
        kallsyms = [(int(a), str(n)) for a, n in zip(ks.addrs, ks.names, strict=True)]
    cmd = trace.tables.get("cmdlines")
    cmdlines = dict(zip(cmd["pid"].to_list(), cmd["comm"].to_list(), strict=True)) if cmd is not None else None
    return events, dict(trace.formats), kallsyms, cmdlines


def write_tracedat(path: str | os.PathLike, events: Mapping[str, pl.DataFrame],
                   formats: Mapping[str, EventFormat] | None = None, *, version: int = 7,
                   compression: str = "none", cpus: int | None = None, page_size: int = 4096,
                   kallsyms: str | Mapping[str, int] | Iterable[tuple[int, str]] | None = None,
                   cmdlines: str | Mapping[int, str] | None = None, clock: str = "local",
                   lost: Iterable[LostEvents] = (), uname: str = DEFAULT_UNAME, printk: str = "",
                   endian: str = "little", padding_events: bool = False) -> int:
    """Write a trace.dat file.

    Args:
        path: the file to create (overwritten).
        events: a loaded :class:`tracekit.model.Trace` (written back with its formats, kallsyms and cmdlines), or
            frames keyed by ``system:event``; each has ``ts`` (ns), ``cpu``, ``common_pid`` (or ``pid``),
            optionally ``common_flags``, ``common_preempt_count``, ``seq`` (order of equal timestamps across
            frames), and the event's own fields by name (missing fields are written as 0).
        formats: event formats by ``system:event``; every one is embedded. Defaults to the bundled Linux 6.18 set.
        version: 6 or 7.
        compression: "none" or "zstd" (version 7 only).
        cpus: CPU count (default: 1 + the highest ``cpu``).
        page_size: ring-buffer page size.
        kallsyms: ``/proc/kallsyms`` text, ``{name: address}`` or ``[(address, name)]``.
        cmdlines: saved_cmdlines text or ``{pid: comm}``.
        clock: the trace clock (``local``, ``global``, ``x86-tsc`` …).
        lost: where the ring buffer dropped events (missed-events flags, with counts when given).
        uname: the UNAME option text.
        printk: printk_formats text.
        endian: only "little" is written.
        padding_events: full pages end with a committed padding record (``rb_reset_tail``) rather than at their
            last event (``real_end``, what a recording holds).

    Returns:
        the number of events written.

    Raises:
        ConfigError: a bad argument (unknown event, cpu out of range, unsupported version or compression).
    """
    if version not in (6, 7):
        raise ConfigError(f"trace.dat version must be 6 or 7, not {version!r}")
    if compression not in ("none", "zstd") or (version == 6 and compression != "none"):
        raise ConfigError(f"compression {compression!r} is not available for trace.dat v{version}")
    if endian != "little":
        raise ConfigError("only little-endian trace.dat files are written")
    if page_size < 64 or page_size & (page_size - 1):
        raise ConfigError(f"page size {page_size} is not a power of two")
    if hasattr(events, "frames") and hasattr(events, "formats"):   # a loaded Trace: write it back
        events, tr_formats, tr_kallsyms, tr_cmdlines = trace_inputs(events)
        formats = formats if formats is not None else tr_formats
        kallsyms = kallsyms if kallsyms is not None else tr_kallsyms
        cmdlines = cmdlines if cmdlines is not None else tr_cmdlines
    formats = dict(builtin_formats() if formats is None else formats)
    if cpus is None:
        cpus = 1 + max((int(df.get_column("cpu").max()) for df in events.values() if df.height), default=0)
    lost = list(lost)
    images = _cpu_images(events, formats, cpus, lost, page_size, padding_events)
    meta = _metadata(formats, _kallsyms_text(kallsyms), _cmdlines_text(cmdlines), printk, page_size)
    with open(path, "wb") as out:
        if version == 6:
            _write_v6(out, meta, images, cpus, page_size, clock, uname)
        else:
            _write_v7(out, meta, images, cpus, page_size, clock, uname, compression)
    return sum(df.height for df in events.values())
