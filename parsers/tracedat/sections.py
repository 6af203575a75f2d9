"""The metadata of a trace.dat file: initial header, v6 header blocks, v7 sections and options, compression.

Implements trace-cmd.dat.v6(5) and trace-cmd.dat.v7(5) (trace-cmd 3.x). Produces a :class:`FileInfo` that names
where every buffer's per-CPU ring-buffer data lies; ``pages.py`` decodes that data.
"""

from __future__ import annotations

import mmap
import zlib
from dataclasses import dataclass, field

import numpy as np
import zstandard

from tracekit.errors import ParseError, TruncatedError, UnsupportedFormatError

from . import layout as L

#: a decompressed blob may not claim more than this many bytes (a corrupt size must not exhaust memory)
MAX_UNCOMPRESSED = 1 << 34
_COMPRESSIONS = ("none", "zstd", "zlib")


class Blob:
    """Bounds-checked reads from the file's bytes (a memory map); every failure names the file and the offset."""

    def __init__(self, data, path: str, big_endian: bool = False):
        self.data = data
        self.size = len(data)
        self.path = path
        self.big = big_endian

    def take(self, off: int, n: int, what: str) -> bytes:
        if off < 0 or n < 0 or off + n > self.size:
            raise TruncatedError(self.path, off, f"{n} bytes of {what}", f"{max(0, self.size - max(off, 0))} bytes")
        return bytes(self.data[off:off + n])

    def num(self, off: int, n: int, what: str) -> int:
        return int.from_bytes(self.take(off, n, what), "big" if self.big else "little")

    def rec(self, off: int, dtype: np.dtype, what: str) -> np.void:
        raw = self.take(off, dtype.itemsize, what)
        return np.frombuffer(raw, L.order(dtype, self.big))[0]

    def cstr(self, off: int, what: str, limit: int = 1 << 16) -> tuple[str, int]:
        """The NUL-terminated string at ``off`` and the offset after its NUL."""
        end = self.data.find(b"\0", off, min(self.size, off + limit)) if off < self.size else -1
        if end < 0:
            raise TruncatedError(self.path, off, f"a NUL-terminated {what}", "no NUL")
        return bytes(self.data[off:end]).decode("utf-8", "replace"), end + 1


def decompress(algo: str, raw: bytes, usize: int, path: str, off: int) -> bytes:
    """Decompress one block of ``algo`` (zstd, zlib) that must expand to ``usize`` bytes.

    Raises:
        ParseError: the block is corrupt or expands to another size.
    """
    if usize > MAX_UNCOMPRESSED:
        raise ParseError(path, off, f"an uncompressed size below {MAX_UNCOMPRESSED}", usize)
    try:
        if algo == "zstd":
            out = zstandard.ZstdDecompressor().decompress(raw, max_output_size=max(usize, 1))
        elif algo == "zlib":
            d = zlib.decompressobj()
            out = d.decompress(raw, usize) if usize else d.decompress(raw)
        else:
            raise UnsupportedFormatError(path, f"unknown compression {algo!r}: expected one of {_COMPRESSIONS}", off)
    except (zstandard.ZstdError, zlib.error) as exc:
        raise ParseError(path, off, f"a valid {algo} block", str(exc)) from exc
    if len(out) != usize:
        raise ParseError(path, off, f"{algo} data expanding to {usize} bytes", f"{len(out)} bytes")
    return out


@dataclass
class CpuData:
    """Where one CPU's ring-buffer pages lie: ``offset``/``size`` in the file (for compressed data, the chunk list)."""

    cpu: int
    offset: int
    size: int


@dataclass
class Buffer:
    """One ftrace instance saved in the file (the top buffer is named "")."""

    name: str
    offset: int
    clock: str | None = None
    page_size: int | None = None
    cpus: list[CpuData] = field(default_factory=list)
    compressed: bool = False
    latency: bool = False


@dataclass
class FileInfo:
    """Everything a trace.dat says besides its event data."""

    path: str
    version: int
    big_endian: bool
    long_size: int
    page_size: int
    compression: str = "none"
    compression_version: str = ""
    header_page: str = ""
    header_event: str = ""
    ftrace_formats: list[str] = field(default_factory=list)
    event_formats: list[tuple[str, str]] = field(default_factory=list)
    kallsyms: str = ""
    printk: str = ""
    cmdlines: str = ""
    cpus: int = 0
    options: list[tuple[int, bytes]] = field(default_factory=list)
    buffers: list[Buffer] = field(default_factory=list)
    sections: list[dict] = field(default_factory=list)


def _read_initial(b: Blob) -> tuple[FileInfo, int]:
    head = b.take(0, len(L.MAGIC), "the trace.dat magic")
    if head != L.MAGIC:
        raise UnsupportedFormatError(b.path, f"not a trace.dat: expected magic {L.MAGIC!r}, found {head!r}", 0)
    ver_s, off = b.cstr(len(L.MAGIC), "version string", limit=16)
    if ver_s not in ("6", "7"):
        raise UnsupportedFormatError(b.path, f"trace.dat version {ver_s!r}: expected 6 or 7", len(L.MAGIC))
    endian = b.num(off, 1, "the endianness flag")
    if endian not in (0, 1):
        raise ParseError(b.path, off, "endianness flag 0 or 1", endian)
    b.big = endian == 1
    long_size = b.num(off + 1, 1, "the long size")
    if long_size not in (4, 8):
        raise ParseError(b.path, off + 1, "long size 4 or 8", long_size)
    page_size = b.num(off + 2, 4, "the page size")
    if page_size < 64 or page_size > (1 << 24) or page_size % 4:
        raise ParseError(b.path, off + 2, "a page size that is a multiple of 4 between 64 B and 16 MiB", page_size)
    info = FileInfo(b.path, int(ver_s), b.big, long_size, page_size)
    return info, off + 6


def _header_info(b: Blob, data: bytes | None, off: int, info: FileInfo) -> int:
    """``header_page`` and ``header_event`` blocks (from the file at ``off``, or from a decompressed section)."""
    src = b if data is None else Blob(data, b.path, b.big)
    for key in ("header_page", "header_event"):
        name, nxt = src.cstr(off, f"'{key}' label", limit=32)
        if name != key:
            raise ParseError(b.path, off, f"the label '{key}'", repr(name))
        size = src.num(nxt, 8, f"{key} size")
        text = src.take(nxt + 8, size, key).decode("utf-8", "replace")
        setattr(info, key, text)
        off = nxt + 8 + size
    return off


def _ftrace_formats(src: Blob, off: int, info: FileInfo) -> int:
    count = src.num(off, 4, "the ftrace format count")
    off += 4
    for _ in range(count):
        size = src.num(off, 8, "an ftrace format size")
        info.ftrace_formats.append(src.take(off + 8, size, "an ftrace event format").decode("utf-8", "replace"))
        off += 8 + size
    return off


def _event_formats(src: Blob, off: int, info: FileInfo) -> int:
    systems = src.num(off, 4, "the event system count")
    off += 4
    for _ in range(systems):
        system, off = src.cstr(off, "event system name")
        count = src.num(off, 4, f"the event count of system {system}")
        off += 4
        for _ in range(count):
            size = src.num(off, 8, "an event format size")
            info.event_formats.append((system, src.take(off + 8, size, "an event format").decode("utf-8", "replace")))
            off += 8 + size
    return off


def _sized_text(src: Blob, off: int, width: int, what: str) -> tuple[str, int]:
    size = src.num(off, width, f"the {what} size")
    return src.take(off + width, size, what).decode("utf-8", "replace"), off + width + size


def _options(src: Blob, off: int, info: FileInfo, v7: bool) -> int | None:
    """Read one options list; returns the offset of the next v7 options section (or None)."""
    hdr = L.order(L.OPTION_HEADER, src.big)
    while True:
        if not v7 and src.num(off, 2, "an option id") == 0:
            return off + 2
        o = src.rec(off, hdr, "an option header")
        oid, size = int(o["id"]), int(o["size"])
        data = src.take(off + hdr.itemsize, size, f"option {oid} data")
        off += hdr.itemsize + size
        if v7 and oid == L.OPT_DONE:
            return int.from_bytes(data[:8], "big" if src.big else "little") if len(data) >= 8 else 0
        info.options.append((oid, data))
        if oid in (L.OPT_BUFFER, L.OPT_BUFFER_TEXT):
            info.buffers.append(_buffer_option(src, oid, data, off - size, v7))


def _buffer_option(src: Blob, oid: int, data: bytes, off: int, v7: bool) -> Buffer:
    d = Blob(data, src.path, src.big)
    boff = d.num(0, 8, "the buffer offset")
    name, p = d.cstr(8, "buffer name")
    buf = Buffer(name, boff, latency=oid == L.OPT_BUFFER_TEXT)
    if not v7:
        return buf
    buf.clock, p = d.cstr(p, "buffer clock")
    if oid == L.OPT_BUFFER_TEXT:
        return buf
    buf.page_size = d.num(p, 4, "the buffer page size")
    n = d.num(p + 4, 4, "the buffer CPU count")
    ent = L.order(L.CPU_ENTRY_V7, src.big)
    if p + 8 + n * ent.itemsize > len(data):
        raise TruncatedError(src.path, off + p + 8, f"{n} CPU entries of buffer {name!r}", f"{len(data)} bytes")
    arr = np.frombuffer(data, ent, count=n, offset=p + 8)
    buf.cpus = [CpuData(int(e["cpu"]), int(e["offset"]), int(e["size"])) for e in arr]
    return buf


def _section(b: Blob, off: int, want: int, info: FileInfo) -> tuple[Blob, int]:
    """The content of the v7 section at ``off`` (decompressed when flagged) and the offset of its content."""
    sh = b.rec(off, L.SECTION_HEADER, "a section header")
    if int(sh["id"]) != want:
        raise ParseError(b.path, off, f"section id {want}", int(sh["id"]))
    start = off + L.SECTION_HEADER.itemsize
    if not int(sh["flags"]) & L.SECTION_FL_COMPRESS:
        return b, start
    ch = b.rec(start, L.COMPRESSION_HEADER, "a compression header")
    raw = b.take(start + 8, int(ch["compressed_size"]), "compressed section data")
    return Blob(decompress(info.compression, raw, int(ch["uncompressed_size"]), b.path, start), b.path, b.big), 0


def _read_v6(b: Blob, off: int, info: FileInfo) -> None:
    off = _header_info(b, None, off, info)
    off = _ftrace_formats(b, off, info)
    off = _event_formats(b, off, info)
    info.kallsyms, off = _sized_text(b, off, 4, "kallsyms")
    info.printk, off = _sized_text(b, off, 4, "printk formats")
    info.cmdlines, off = _sized_text(b, off, 8, "saved cmdlines")
    info.cpus = b.num(off, 4, "the CPU count")
    off += 4
    kind = b.take(off, 10, "'options', 'latency' or 'flyrecord'")
    off += 10
    if kind.startswith(b"options"):
        off = _options(b, off, info, v7=False)
        kind = b.take(off, 10, "'latency' or 'flyrecord'")
        off += 10
    top = Buffer("", off)
    if kind.startswith(b"latency"):
        top.latency = True
    elif kind.startswith(b"flyrecord"):
        top.cpus = _v6_cpus(b, off, info.cpus)
    else:
        raise ParseError(b.path, off - 10, "'latency' or 'flyrecord'", repr(kind))
    for buf in info.buffers:  # v6 instance: at its offset, 'flyrecord\0' then the same number of CPU entries
        kind = b.take(buf.offset, 10, f"'flyrecord' of buffer {buf.name!r}")
        if not kind.startswith(b"flyrecord"):
            raise ParseError(b.path, buf.offset, f"'flyrecord' of buffer {buf.name!r}", repr(kind))
        buf.cpus = _v6_cpus(b, buf.offset + 10, info.cpus)
    info.buffers.insert(0, top)


def _v6_cpus(b: Blob, off: int, n: int) -> list[CpuData]:
    ent = L.order(L.CPU_ENTRY_V6, b.big)
    raw = b.take(off, n * ent.itemsize, f"{n} flyrecord CPU entries")
    return [CpuData(i, int(e["offset"]), int(e["size"])) for i, e in enumerate(np.frombuffer(raw, ent))]


_SECTION_READERS = {
    L.SEC_HEADER_INFO: "header_info", L.SEC_FTRACE_EVENTS: "ftrace", L.SEC_EVENT_FORMATS: "events",
    L.SEC_KALLSYMS: "kallsyms", L.SEC_PRINTK: "printk", L.SEC_CMDLINES: "cmdlines",
}


def _scan_sections(b: Blob, off: int, info: FileInfo) -> None:
    """Walk the v7 section headers from the first one (as trace-cmd's read_metadata_strings() does), collect the
    STRINGS sections and name every section by its description string. A damaged chain just ends the walk."""
    strings = b""
    found = []
    for _ in range(4096):
        if off + L.SECTION_HEADER.itemsize > b.size:
            break
        sh = b.rec(off, L.SECTION_HEADER, "a section header")
        sid, flags, size = int(sh["id"]), int(sh["flags"]), int(sh["size"])
        start = off + L.SECTION_HEADER.itemsize
        if sid > 64 or start + size > b.size:
            break
        found.append({"id": sid, "offset": off, "flags": flags, "size": size, "string_id": int(sh["string_id"])})
        if sid == L.SEC_STRINGS:
            try:
                if flags & L.SECTION_FL_COMPRESS:
                    ch = b.rec(start, L.COMPRESSION_HEADER, "a compression header")
                    strings += decompress(info.compression, b.take(start + 8, int(ch["compressed_size"]),
                                                                   "compressed strings"),
                                          int(ch["uncompressed_size"]), b.path, start)
                else:
                    strings += b.take(start, size, "the strings section")
            except (ParseError, UnsupportedFormatError):
                break
        off = start + size
    for sec in found:
        sid = sec.pop("string_id")
        end = strings.find(b"\0", sid)
        sec["description"] = strings[sid:end].decode("utf-8", "replace") if 0 <= sid < len(strings) and end >= 0 \
            else None
    info.sections = found


def _read_v7(b: Blob, off: int, info: FileInfo) -> None:
    info.compression, off = b.cstr(off, "compression name", limit=64)
    info.compression_version, off = b.cstr(off, "compression version", limit=64)
    if info.compression not in _COMPRESSIONS:
        raise UnsupportedFormatError(b.path, f"unknown compression {info.compression!r}: expected one of "
                                             f"{_COMPRESSIONS}", off)
    nxt = b.num(off, 8, "the offset of the first options section")
    _scan_sections(b, off + 8, info)
    seen: set[int] = set()
    while nxt:
        if nxt in seen:
            raise ParseError(b.path, nxt, "an options section not visited before", "a loop")
        seen.add(nxt)
        src, start = _section(b, nxt, L.OPT_DONE, info)
        nxt = _options(src, start, info, v7=True) or 0
    for oid, data in list(info.options):
        if oid not in _SECTION_READERS or len(data) < 8:
            continue
        soff = int.from_bytes(data[:8], "big" if b.big else "little")
        src, start = _section(b, soff, oid, info)
        kind = _SECTION_READERS[oid]
        if kind == "header_info":
            _header_info(src, None, start, info)
        elif kind == "ftrace":
            _ftrace_formats(src, start, info)
        elif kind == "events":
            _event_formats(src, start, info)
        elif kind == "kallsyms":
            info.kallsyms, _ = _sized_text(src, start, 4, "kallsyms")
        elif kind == "printk":
            info.printk, _ = _sized_text(src, start, 4, "printk formats")
        else:
            info.cmdlines, _ = _sized_text(src, start, 8, "saved cmdlines")
    for buf in info.buffers:
        if buf.latency:
            continue
        sh = b.rec(buf.offset, L.SECTION_HEADER, f"the flyrecord section header of buffer {buf.name!r}")
        if int(sh["id"]) not in (L.OPT_BUFFER, L.OPT_BUFFER_TEXT):
            raise ParseError(b.path, buf.offset, f"section id {L.OPT_BUFFER} (buffer {buf.name!r})", int(sh["id"]))
        buf.compressed = bool(int(sh["flags"]) & L.SECTION_FL_COMPRESS)
    cpu_opt = [d for i, d in info.options if i == L.OPT_CPUCOUNT and len(d) >= 4]
    info.cpus = (int.from_bytes(cpu_opt[-1][:4], "big" if b.big else "little") if cpu_opt
                 else max((len(x.cpus) for x in info.buffers), default=0))
    info.buffers.sort(key=lambda x: x.name != "")


def read_info(data, path: str) -> FileInfo:
    """Parse everything but the event data of the trace.dat in ``data`` (bytes or a memory map).

    Raises:
        UnsupportedFormatError: not a trace.dat, or a version/compression this reader does not know.
        ParseError: a header, section or option is damaged or truncated.
    """
    b = Blob(data, path)
    info, off = _read_initial(b)
    if info.version == 6:
        _read_v6(b, off, info)
    else:
        _read_v7(b, off, info)
    return info


def cpu_chunks(b: Blob, info: FileInfo, buf: Buffer, cpu: CpuData) -> list[tuple[int, int, int]]:
    """Where one CPU's ring-buffer pages of ``buf`` lie: ``(file offset, stored bytes, uncompressed bytes)`` per
    chunk (one chunk when the data is not compressed).

    Raises:
        ParseError: the data lies outside the file, or a chunk header is damaged.
    """
    if cpu.size == 0:
        return []
    if not buf.compressed:
        if cpu.offset + cpu.size > b.size:
            raise TruncatedError(b.path, cpu.offset, f"{cpu.size} bytes of CPU {cpu.cpu} data",
                                 f"{max(0, b.size - cpu.offset)} bytes")
        return [(cpu.offset, cpu.size, cpu.size)]
    count = b.num(cpu.offset, 4, f"the chunk count of CPU {cpu.cpu}")
    off = cpu.offset + 4
    end = cpu.offset + 4 + cpu.size  # the size recorded leaves out the 4-byte chunk count
    hdr = L.order(L.COMPRESSION_HEADER, b.big)
    chunks = []
    total = 0
    for _ in range(count):
        ch = b.rec(off, hdr, "a chunk header")
        csize, usize = int(ch["compressed_size"]), int(ch["uncompressed_size"])
        if off + 8 + csize > min(end, b.size):
            raise TruncatedError(b.path, off, f"a compressed chunk of {csize} bytes within CPU {cpu.cpu}'s data",
                                 f"{max(0, min(end, b.size) - off - 8)} bytes")
        total += usize
        if total > MAX_UNCOMPRESSED:
            raise ParseError(b.path, off, f"CPU data below {MAX_UNCOMPRESSED} bytes uncompressed", total)
        chunks.append((off + 8, csize, usize))
        off += 8 + csize
    return chunks


def _zstd_into(raw: bytes, dest: np.ndarray, path: str, off: int, dctx=None) -> None:
    """Decompress one zstd chunk straight into ``dest``, which it must fill exactly (``dctx``: a decompressor
    to reuse; one per chunk costs a context allocation each)."""
    mv = memoryview(dest)
    got = 0
    try:
        with (dctx or zstandard.ZstdDecompressor()).stream_reader(raw) as r:
            while got < len(dest):
                n = r.readinto(mv[got:])
                if not n:
                    break
                got += n
            extra = r.read(1)
    except zstandard.ZstdError as exc:
        raise ParseError(path, off, "a valid zstd chunk", str(exc)) from exc
    if got != len(dest) or extra:
        raise ParseError(path, off, f"zstd data expanding to {len(dest)} bytes", f"{got}{'+' if extra else ''} bytes")


_COPY_SLICE = 1 << 24


def fill_chunks(b: Blob, info: FileInfo, chunks: list[tuple[int, int, int]], dest: np.ndarray,
                compressed: bool) -> None:
    """Copy (decompressing) ``chunks`` into ``dest`` (uint8, at least the sum of their uncompressed sizes).

    Raises:
        ParseError: a compressed chunk is damaged.
    """
    pos = 0
    dctx = zstandard.ZstdDecompressor() if compressed and info.compression == "zstd" else None
    for off, csize, usize in chunks:
        if not compressed:
            # in slices, each dropped from the map once copied: the map never holds more than one slice
            for at in range(0, usize, _COPY_SLICE):
                n = min(_COPY_SLICE, usize - at)
                dest[pos + at:pos + at + n] = np.frombuffer(b.data, np.uint8, count=n, offset=off + at)
                drop_pages(b.data, off + at, n)
        elif info.compression == "zstd":
            _zstd_into(b.take(off, csize, "a compressed chunk"), dest[pos:pos + usize], b.path, off - 8, dctx)
        else:
            out = decompress(info.compression, b.take(off, csize, "a compressed chunk"), usize, b.path, off - 8)
            dest[pos:pos + usize] = np.frombuffer(out, np.uint8)
        if compressed:
            drop_pages(b.data, off, csize)
        pos += usize


def drop_pages(data, off: int, n: int) -> None:
    """Drop the file's pages of bytes ``off:off + n`` of a memory map from this process (a read-only map's pages stay
    in the page cache and fault back in if read again, but no longer count in RSS): otherwise the file's CPU data
    counts in the reader's resident memory beside its decoded copy. Other buffers (bytes, pread) are left alone."""
    if isinstance(data, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        lo = off // mmap.PAGESIZE * mmap.PAGESIZE
        hi = min(len(data), off + n)
        if hi > lo:
            data.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
