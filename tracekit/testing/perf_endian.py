"""Rewrite a little-endian ``perf.data`` as a big-endian host would have written it (for the reader's tests).

No big-endian machine is at hand, so this converter makes the files: every integer is stored in the other byte
order, as ``tools/perf/util/session.c`` (``perf_event__*_swap``) undoes it, and the ``perf_event_attr`` bitfield
keeps its bytes in place with the bits of each byte reversed (a big-endian compiler allocates bitfields from the most
significant bit: perf's ``swap_bitfield``). Scope: what ``perf record`` writes for software/hardware events without
RAW or READ data — header, attrs and their ids, the kernel records with a fixed body (MMAP, MMAP2, COMM, FORK, EXIT, LOST,
LOST_SAMPLES, THROTTLE, UNTHROTTLE, SWITCH, KSYMBOL, BPF_EVENT, …), ID_INDEX, TIME_CONV, EVENT_UPDATE, THREAD_MAP, CPU_MAP, SAMPLE (IP, TID, TIME, ADDR, ID, STREAM_ID, CPU, PERIOD, CALLCHAIN, IDENTIFIER, WEIGHT, DATA_SRC,
TRANSACTION, PHYS_ADDR, CGROUP), FINISHED_ROUND, FINISHED_INIT, and the string/number features plus ``event_desc``
(others are left out and their bits cleared). Anything else raises ``ValueError``: the converter never guesses.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from tracekit.parsers.perf_data import layout as L
from tracekit.parsers.perf_data.header import FLAGS_AT, be_bitfield_bytes
from tracekit.parsers.perf_data.records import sample_id_size

_U64_SAMPLE_BITS = ("IP", "TIME", "ADDR", "ID", "STREAM_ID", "PERIOD", "WEIGHT", "DATA_SRC", "TRANSACTION",
                    "PHYS_ADDR", "CGROUP", "IDENTIFIER")
_SAMPLE_ORDER = ("IDENTIFIER", "IP", "TID", "TIME", "ADDR", "ID", "STREAM_ID", "CPU", "PERIOD", "CALLCHAIN",
                 "WEIGHT", "DATA_SRC", "TRANSACTION", "PHYS_ADDR", "CGROUP")
_KEPT_FEATURES = ("hostname", "osrelease", "version", "arch", "nrcpus", "cpudesc", "cpuid", "total_mem", "cmdline",
                  "event_desc", "sample_time", "clockid", "clock_data")


def _swap(buf: bytearray, pos: int, fmt: str) -> int:
    """Swap the integers of struct format ``fmt`` at ``pos`` in place; returns the end."""
    n = struct.calcsize("<" + fmt)
    buf[pos:pos + n] = struct.pack(">" + fmt, *struct.unpack_from("<" + fmt, buf, pos))
    return pos + n


def _swap_dtype(buf: bytearray, pos: int, dt: np.dtype) -> int:
    buf[pos:pos + dt.itemsize] = np.frombuffer(bytes(buf[pos:pos + dt.itemsize]), dt).astype(L.swapped(dt)).tobytes()
    return pos + dt.itemsize


def _attr_to_big(raw: bytes) -> bytes:
    out = bytearray(raw)
    size = len(raw)
    full = bytearray(raw[:L.perf_event_attr.itemsize].ljust(L.perf_event_attr.itemsize, b"\0"))
    _swap_dtype(full, 0, L.perf_event_attr)
    full[FLAGS_AT:FLAGS_AT + 8] = be_bitfield_bytes(int.from_bytes(raw[FLAGS_AT:FLAGS_AT + 8], "little"))
    out[:min(size, len(full))] = full[:min(size, len(full))]
    return bytes(out)


def _sample_type(buf: bytes, hdr: np.void) -> int:
    types = set()
    pos, end = int(hdr["attrs"]["offset"]), int(hdr["attrs"]["offset"]) + int(hdr["attrs"]["size"])
    while pos < end:
        attr = np.frombuffer(bytes(buf[pos:pos + L.perf_event_attr.itemsize]).ljust(L.perf_event_attr.itemsize,
                                                                                     b"\0"), L.perf_event_attr)[0]
        types.add(int(attr["sample_type"]))
        if int(attr["read_format"]) and int(attr["sample_type"]) & L.S["READ"]:
            raise ValueError("READ samples are not converted")
        pos += int(hdr["attr_size"])
    if len(types) != 1:
        raise ValueError(f"attrs with different sample_type values: {sorted(types)}")
    st = types.pop()
    unsupported = st & ~sum(L.S[b] for b in (*_U64_SAMPLE_BITS, "TID", "CPU", "CALLCHAIN"))
    if unsupported:
        raise ValueError(f"sample_type bits {unsupported:#x} are not converted")
    return st


def _swap_fields(buf: bytearray, pos: int, st: int, order: tuple[str, ...]) -> int:
    for bit in order:
        if not st & L.S[bit]:
            continue
        if bit in ("TID", "CPU"):
            pos = _swap(buf, pos, "II")
        elif bit == "CALLCHAIN":
            (nr,) = struct.unpack_from("<Q", buf, pos)
            pos = _swap(buf, pos, f"{1 + nr}Q")
        else:
            pos = _swap(buf, pos, "Q")
    return pos


def _trailer(buf: bytearray, end: int, st: int) -> None:
    _swap_fields(buf, end - sample_id_size(st), st, L.SAMPLE_ID_FIELDS)


def _records(buf: bytearray, start: int, end: int, st: int, sample_id_all: bool) -> None:
    pos = start
    while pos < end:
        typ, _misc, size = struct.unpack_from("<IHH", buf, pos)
        if size < 8:
            raise ValueError(f"record of size {size} at {pos}")
        _swap(buf, pos, "IHH")
        body = pos + 8
        if typ == L.T["SAMPLE"]:
            _swap_fields(buf, body, st, _SAMPLE_ORDER)
        elif typ in (L.T["FINISHED_ROUND"], L.T["FINISHED_INIT"]):
            pass
        elif typ == L.T["ID_INDEX"]:  # nr, then nr entries of u64 fields
            _swap(buf, body, f"{(size - 8) // 8}Q")
        elif typ == L.T["EVENT_UPDATE"]:  # u64 type, u64 id, then a string (UNIT, NAME) or a double (SCALE)
            (kind,) = struct.unpack_from("<Q", buf, body)
            _swap(buf, body, "QQ")
            if kind == 1:
                _swap(buf, body + 16, "d")
            elif kind not in (0, 2):
                raise ValueError(f"EVENT_UPDATE of type {kind} at {pos} is not converted")
        elif typ == L.T["THREAD_MAP"]:  # u64 nr, then nr × (u64 pid, char comm[16])
            (nr,) = struct.unpack_from("<Q", buf, body)
            p = _swap(buf, body, "Q")
            for _ in range(nr):
                p = _swap(buf, p, "Q") + 16
        elif typ == L.T["CPU_MAP"]:  # perf_record_cpu_map_data: u16 type, then CPUS (u16 nr, u16 cpu[]) or RANGE
            (kind,) = struct.unpack_from("<H", buf, body)
            p = _swap(buf, body, "H")
            if kind == 0:
                (nr,) = struct.unpack_from("<H", buf, p)
                _swap(buf, p, f"{1 + nr}H")
            elif kind == 2:  # u8 any_cpu, u8 pad, u16 start_cpu, u16 end_cpu
                _swap(buf, p + 2, "HH")
            else:
                raise ValueError(f"CPU_MAP of type {kind} at {pos} is not converted")
        elif typ == L.T["TIME_CONV"]:
            _swap_dtype(buf, body, L.RECORD_BODIES[typ])
        elif typ in L.RECORD_BODIES and typ < 64 and typ != L.T["TEXT_POKE"]:  # fixed body (+ string) + sample_id
            _swap_dtype(buf, body, L.RECORD_BODIES[typ])
            if sample_id_all:
                _trailer(buf, pos + size, st)
        else:
            raise ValueError(f"record type {typ} at {pos} is not converted")
        pos += size


def _features(buf: bytes, hdr: np.void) -> tuple[list[int], list[bytes]]:
    """(bits, big-endian payloads) of the kept features."""
    bits = int(hdr["adds_features"][0]) | (int(hdr["adds_features"][1]) << 64)
    table = int(hdr["data"]["offset"]) + int(hdr["data"]["size"])
    kept_bits, payloads = [], []
    k = 0
    for bit, name in enumerate(L.FEATURES):
        if not bits >> bit & 1:
            continue
        off, size = struct.unpack_from("<QQ", buf, table + 16 * k)
        k += 1
        if name not in _KEPT_FEATURES:
            continue
        data = bytearray(buf[off:off + size])
        if name in ("hostname", "osrelease", "version", "arch", "cpudesc", "cpuid"):
            _swap(data, 0, "I")
        elif name == "cmdline":
            (n,) = struct.unpack_from("<I", data, 0)
            p = _swap(data, 0, "I")
            for _ in range(n):
                (ln,) = struct.unpack_from("<I", data, p)
                p = _swap(data, p, "I") + ln
        elif name == "nrcpus":
            _swap(data, 0, "II")
        elif name in ("total_mem", "clockid"):
            _swap(data, 0, "Q")
        elif name == "sample_time":
            _swap(data, 0, "QQ")
        elif name == "clock_data":
            _swap(data, 0, "IIQQ")
        elif name == "event_desc":
            nr, attr_size = struct.unpack_from("<II", data, 0)
            p = _swap(data, 0, "II")
            for _ in range(nr):
                data[p:p + attr_size] = _attr_to_big(bytes(data[p:p + attr_size]))
                p += attr_size
                (nr_ids,) = struct.unpack_from("<I", data, p)
                p = _swap(data, p, "I")
                (ln,) = struct.unpack_from("<I", data, p)
                p = _swap(data, p, "I") + ln
                p = _swap(data, p, f"{nr_ids}Q")
        kept_bits.append(bit)
        payloads.append(bytes(data))
    return kept_bits, payloads


def to_big_endian(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write ``src`` (a little-endian, single-file, uncompressed perf.data) as a big-endian writer would.

    Raises:
        ValueError: ``src`` holds something outside the converter's scope (see the module docstring).
    """
    buf = bytearray(Path(src).read_bytes())
    if bytes(buf[:8]) != L.MAGIC or len(buf) < L.perf_file_header.itemsize:
        raise ValueError(f"{src}: not a little-endian perf.data file")
    hdr = np.frombuffer(bytes(buf[:L.perf_file_header.itemsize]), L.perf_file_header)[0]
    if int(hdr["size"]) != L.perf_file_header.itemsize:
        raise ValueError(f"{src}: not a little-endian perf.data file of the file layout (pipe mode?)")
    st = _sample_type(buf, hdr)
    bits, payloads = _features(buf, hdr)
    # attrs (each followed by the section of its ids) and the id arrays
    pos, end = int(hdr["attrs"]["offset"]), int(hdr["attrs"]["offset"]) + int(hdr["attrs"]["size"])
    attr_size = int(hdr["attr_size"]) - 16
    sample_id_all = False
    while pos < end:
        raw = bytes(buf[pos:pos + attr_size])
        sample_id_all |= bool(int.from_bytes(raw[FLAGS_AT:FLAGS_AT + 8], "little") & L.FLAG_SAMPLE_ID_ALL)
        buf[pos:pos + attr_size] = _attr_to_big(raw)
        ids_off, ids_size = struct.unpack_from("<QQ", buf, pos + attr_size)
        _swap(buf, pos + attr_size, "QQ")
        if ids_size:
            _swap(buf, ids_off, f"{ids_size // 8}Q")
        pos += attr_size + 16
    data_off, data_size = int(hdr["data"]["offset"]), int(hdr["data"]["size"])
    _records(buf, data_off, data_off + data_size, st, sample_id_all)
    # features: the section table right after the data, then the payloads
    out = bytearray(buf[:data_off + data_size])
    table_at = len(out)
    off = table_at + 16 * len(bits)
    table = b""
    for p in payloads:
        table += struct.pack(">QQ", off, len(p))
        off += len(p)
    out += table + b"".join(payloads)
    feat = sum(1 << b for b in bits)
    new = np.zeros(1, L.perf_file_header)
    new[0] = hdr
    new["adds_features"][0] = [feat & (2**64 - 1), feat >> 64, 0, 0]
    out[:L.perf_file_header.itemsize] = new.astype(L.swapped(L.perf_file_header)).tobytes()
    Path(dst).write_bytes(bytes(out))
    return Path(dst)
