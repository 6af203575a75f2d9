"""perf.data header features, attrs and the tracing-data blob, per ``perf.data-file-format.txt`` (Linux 6.x).

Feature sections follow the data section, one ``perf_file_section`` per bit set in ``adds_features``; in pipe mode
the same payloads come as ``PERF_RECORD_HEADER_FEATURE`` records. Each decoder takes the payload bytes and returns
plain Python values for ``Trace.metadata``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracekit.errors import ParseError, TruncatedError
from tracekit.formats import EventFormat, parse_format
from tracekit.symbols import Kallsyms

from . import layout as L

CLOCK_NAMES = {0: "realtime", 1: "monotonic", 4: "monotonic_raw", 5: "realtime_coarse", 6: "monotonic_coarse",
               7: "boottime", 11: "tai"}

_SOFTWARE = ("cpu-clock", "task-clock", "page-faults", "context-switches", "cpu-migrations", "minor-faults",
             "major-faults", "alignment-faults", "emulation-faults", "dummy", "bpf-output", "cgroup-switches")
_HARDWARE = ("cycles", "instructions", "cache-references", "cache-misses", "branches", "branch-misses",
             "bus-cycles", "stalled-cycles-frontend", "stalled-cycles-backend", "ref-cycles")


@dataclass
class Attr:
    """One event of the recording: its perf_event_attr, ids and name."""

    attr: dict
    ids: list[int] = field(default_factory=list)
    name: str = ""

    @property
    def sample_type(self) -> int:
        return int(self.attr["sample_type"])

    @property
    def read_format(self) -> int:
        return int(self.attr["read_format"])

    @property
    def sample_id_all(self) -> bool:
        return bool(int(self.attr["flags"]) & L.FLAG_SAMPLE_ID_ALL)

    def default_name(self) -> str:
        typ, cfg = int(self.attr["type"]), int(self.attr["config"])
        if typ == 1 and cfg < len(_SOFTWARE):
            return _SOFTWARE[cfg]
        if typ == 0 and cfg < len(_HARDWARE):
            return _HARDWARE[cfg]
        return f"type{typ}:{cfg:#x}"


FLAGS_AT = L.perf_event_attr.fields["flags"][1]
_REV = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
_PRECISE_IP = L.ATTR_FLAG_BITS.index("precise_ip")


def _swap_precise_ip(v: int) -> int:
    """The 2-bit ``precise_ip`` with its two bits exchanged: bit reversal turns the field around, and its value
    keeps its bit order (perf's own swap would read 1 as 2)."""
    lo, hi = (v >> _PRECISE_IP) & 1, (v >> (_PRECISE_IP + 1)) & 1
    return (v & ~(3 << _PRECISE_IP)) | (hi << _PRECISE_IP) | (lo << (_PRECISE_IP + 1))


def _be_bitfield(raw: bytes) -> int:
    """The attr bitfield of a big-endian writer in the little-endian bit numbering of :data:`ATTR_FLAG_BITS`: bits
    reversed within each byte, bytes in place (perf's ``swap_bitfield``)."""
    return _swap_precise_ip(int.from_bytes(bytes(_REV[b] for b in raw), "little"))


def be_bitfield_bytes(flags: int) -> bytes:
    """The inverse of the big-endian reading: the 8 bitfield bytes a big-endian writer stores for ``flags``."""
    return bytes(_REV[b] for b in _swap_precise_ip(flags).to_bytes(8, "little"))


def parse_attr(raw: bytes, big: bool) -> dict:
    """A perf_event_attr of any size (shorter versions zero-extended, longer ones cut) as a dict."""
    dt = L.order(L.perf_event_attr, big)
    buf = bytes(raw[: dt.itemsize]).ljust(dt.itemsize, b"\0")
    rec = np.frombuffer(buf, dtype=dt)[0]
    out = {name: rec[name].item() for name in dt.names}
    flags = int(out["flags"])
    if big:  # a big-endian compiler allocates the bitfield from the top bit of its first byte (perf: swap_bitfield)
        flags = _be_bitfield(buf[FLAGS_AT:FLAGS_AT + 8])
        out["flags"] = flags
    for i, name in enumerate(L.ATTR_FLAG_BITS):
        if name != "precise_ip_hi":
            out[name] = (flags >> i) & (3 if name == "precise_ip" else 1)
    return out


class _Cursor:
    """Bounds-checked reads from one feature payload (errors carry the file offset)."""

    def __init__(self, data: bytes, base: int, path, big: bool, what: str):
        self.data, self.base, self.path, self.big, self.what, self.pos = data, base, path, big, what, 0

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise TruncatedError(self.path, self.base + self.pos, f"{n} more bytes of feature {self.what}",
                                 f"{len(self.data) - self.pos}")

    def u32(self) -> int:
        self.need(4)
        v = int.from_bytes(self.data[self.pos:self.pos + 4], "big" if self.big else "little")
        self.pos += 4
        return v

    def u64(self) -> int:
        self.need(8)
        v = int.from_bytes(self.data[self.pos:self.pos + 8], "big" if self.big else "little")
        self.pos += 8
        return v

    def raw(self, n: int) -> bytes:
        self.need(n)
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return v

    def string(self) -> str:
        n = self.u32()
        if n > 1 << 20:
            raise ParseError(self.path, self.base + self.pos - 4, f"a string length in feature {self.what}", n)
        return self.raw(n).split(b"\0", 1)[0].decode("utf-8", "replace")

    def strings(self) -> list[str]:
        n = self.u32()
        if n > 1 << 16:
            raise ParseError(self.path, self.base + self.pos - 4, f"a string count in feature {self.what}", n)
        return [self.string() for _ in range(n)]

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _event_desc(c: _Cursor) -> list[dict]:
    nr, attr_size = c.u32(), c.u32()
    if nr > 1 << 16 or not L.ATTR_SIZE_VER0 <= attr_size <= 4096:
        raise ParseError(c.path, c.base, "event_desc with a sane count and attr size", (nr, attr_size))
    out = []
    for _ in range(nr):
        attr = parse_attr(c.raw(attr_size), c.big)
        nr_ids = c.u32()
        name = c.string()
        c.need(8 * nr_ids)
        ids = [c.u64() for _ in range(nr_ids)]
        out.append({"name": name, "ids": ids, "attr": attr})
    return out


def _cpu_topology(c: _Cursor, nrcpus: int | None) -> dict:
    out: dict = {"core_siblings": c.strings(), "thread_siblings": c.strings()}
    if nrcpus and c.left >= 8 * nrcpus:
        pairs = [(c.u32(), c.u32()) for _ in range(nrcpus)]
        out["core_id"] = [p[0] for p in pairs]
        out["socket_id"] = [p[1] for p in pairs]
        if c.left >= 4:
            out["die_siblings"] = c.strings()
            if c.left >= 4 * nrcpus:
                out["die_id"] = [c.u32() for _ in range(nrcpus)]
    return out


def decode_feature(name: str, data: bytes, base: int, path, big: bool, metadata: dict) -> object:
    """Decode one feature payload; unknown or unneeded features are kept as their byte length."""
    c = _Cursor(data, base, path, big, name)
    if name in ("hostname", "osrelease", "version", "arch", "cpudesc", "cpuid"):
        return c.string()
    if name == "cmdline":
        return c.strings()
    if name == "nrcpus":
        return {"available": c.u32(), "online": c.u32()}
    if name == "total_mem":
        return c.u64()
    if name == "event_desc":
        return _event_desc(c)
    if name == "cpu_topology":
        nr = metadata.get("nrcpus", {}).get("available")
        return _cpu_topology(c, nr)
    if name == "clockid":
        return c.u64()  # the clock's resolution as a frequency: ns per ... (perf prints it as MHz)
    if name == "clock_data":
        version, clockid, wall, clk = c.u32(), c.u32(), c.u64(), c.u64()
        return {"version": version, "clockid": clockid, "clock": CLOCK_NAMES.get(clockid, str(clockid)),
                "wall_clock_ns": wall, "clockid_time_ns": clk}
    if name == "compressed":
        version, typ, level, ratio, mmap_len = (c.u32() for _ in range(5))
        return {"version": version, "type": "zstd" if typ == 1 else str(typ), "level": level, "ratio": ratio,
                "mmap_len": mmap_len}
    if name == "dir_format":
        return {"version": c.u64()}
    if name == "sample_time":
        return {"first": c.u64(), "last": c.u64()}
    if name == "pmu_mappings":
        n = c.u32()
        return {c.u32(): c.string() for _ in range(min(n, 4096))}
    return {"bytes": len(data)}


# -- tracing data (the trace-cmd "tracing" blob: event formats and kallsyms) ------------------------------------
_TRACING_MAGIC = b"\x17\x08\x44tracing"


def parse_tracing_data(data: bytes, base: int, path) -> tuple[dict[str, EventFormat], Kallsyms | None, dict]:
    """Event formats (by ``system:event``), kallsyms and settings from a perf tracing-data blob.

    Raises:
        ParseError: the blob does not start with the tracing magic or ends early.
    """
    if not data.startswith(_TRACING_MAGIC):
        raise ParseError(path, base, "tracing data magic \\x17\\x08Dtracing", data[:10])
    pos = len(_TRACING_MAGIC)
    end = data.index(b"\0", pos)
    version = data[pos:end].decode()
    pos = end + 1
    big = data[pos] == 1
    long_size = data[pos + 1]
    order = "big" if big else "little"
    pos += 2
    page_size = int.from_bytes(data[pos:pos + 4], order)
    pos += 4

    def num(n: int) -> int:
        nonlocal pos
        if pos + n > len(data):
            raise TruncatedError(path, base + pos, f"{n}-byte count in tracing data", len(data) - pos)
        v = int.from_bytes(data[pos:pos + n], order)
        pos += n
        return v

    def text(n: int) -> str:
        nonlocal pos
        if pos + n > len(data):
            raise TruncatedError(path, base + pos, f"{n} bytes of tracing data text", len(data) - pos)
        v = data[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return v

    def cstr() -> str:
        nonlocal pos
        e = data.index(b"\0", pos)
        v = data[pos:e].decode("utf-8", "replace")
        pos = e + 1
        return v

    formats: dict[str, EventFormat] = {}
    for expect in ("header_page", "header_event"):
        name = cstr()
        if name != expect:
            raise ParseError(path, base + pos, f"'{expect}' in tracing data", name[:20])
        text(num(8))
    for _ in range(num(4)):
        fmt = parse_format(text(num(8)), "ftrace", path=path)
        formats[fmt.full_name] = fmt
    for _ in range(num(4)):
        system = cstr()
        for _ in range(num(4)):
            fmt = parse_format(text(num(8)), system, path=path)
            formats[fmt.full_name] = fmt
    ksyms = None
    if pos + 4 <= len(data):
        ktext = text(num(4))
        if ktext.strip():
            ksyms = Kallsyms.parse(ktext, path)
    return formats, ksyms, {"tracing_version": version, "long_size": long_size, "page_size": page_size,
                            "big_endian": big}
