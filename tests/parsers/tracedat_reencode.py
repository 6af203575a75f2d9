"""Re-lay a real little-endian, 64-bit trace.dat as a v6 file of another byte order and/or kernel long size.

trace-cmd cannot record big-endian or 32-bit traces on this x86-64 host, so the tests check those decoders on a
re-encoding of a real file made here: every number of the headers, pages, record headers and event fields is
rewritten in the target byte order (field by field, using the event formats); for a 4-byte long the page header's
``commit`` becomes 4 bytes (data at offset 12) and records whose formats hold ``long`` arrays (ftrace's
``kernel_stack``) are turned into padding records, since their payload layout would change. Record order, lengths and
time deltas are kept, so the decoded frames must equal the original's (minus the padded events).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tracekit.parsers.tracedat import layout as L
from tracekit.parsers.tracedat.sections import Blob, cpu_chunks, fill_chunks, read_info

from tracekit.formats import parse_format

_HEADER_PAGE_32 = ("\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
                   "\tfield: local_t commit;\toffset:8;\tsize:4;\tsigned:1;\n"
                   "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
                   "\tfield: char data;\toffset:12;\tsize:{n};\tsigned:0;\n")


def _num(v: int, n: int, big: bool) -> bytes:
    return int(v % (1 << (8 * n))).to_bytes(n, "big" if big else "little")


def _swap_fields(payload: bytearray, fmt, long_size_src: int) -> None:
    """Reverse the bytes of every numeric field (and array element) of one record payload, in place."""
    n = len(payload)

    def rev(at: int, size: int) -> None:
        if size > 1 and at + size <= n:
            payload[at:at + size] = payload[at:at + size][::-1]

    for f in fmt.fields:
        if f.is_string:
            if f.is_dynamic:
                rev(f.offset, 4)
            continue
        if f.is_dynamic:
            loc = int.from_bytes(payload[f.offset:f.offset + 4], "little")
            start = (loc & 0xFFFF) + (f.offset + f.size if f.rel_loc else 0)
            es = f.element_size(long_size_src)
            for k in range(start, start + (loc >> 16) - es + 1, es):
                rev(k, es)
            rev(f.offset, 4)
        elif f.array_len is not None:
            es = f.element_size(long_size_src)
            end = n if f.array_len == 0 else f.offset + f.size
            if fmt.name == "kernel_stack" and f.name == "caller":
                count = int.from_bytes(payload[8:12], "little", signed=True)
                end = min(n, f.offset + count * es)
            for k in range(f.offset, end - es + 1, es):
                rev(k, es)
        else:
            rev(f.offset, f.size)


def reencode(src: Path, dst: Path, *, big: bool, long_size: int,
             options: tuple[tuple[int, bytes], ...] = ()) -> dict[str, int]:
    """Write ``src`` (little-endian, 8-byte long) as a v6 ``dst`` in the target layout, with ``options`` (id, data)
    added after UNAME.

    Returns:
        The number of records turned into padding, per ``system:event``.
    """
    raw = src.read_bytes()
    info = read_info(raw, str(src))
    assert not info.big_endian and info.long_size == 8
    formats = {}
    for system, text in [("ftrace", t) for t in info.ftrace_formats] + info.event_formats:
        fmt = parse_format(text, system)
        formats[fmt.id] = fmt
    padded: dict[str, int] = {}
    ps = info.page_size
    hdr_src, hdr_dst = 16, 8 + long_size
    out = bytearray(L.MAGIC + b"6\0" + bytes([1 if big else 0, long_size]) + _num(ps, 4, big))
    header_page = info.header_page if long_size == 8 else _HEADER_PAGE_32.format(n=ps - 12)
    for label, text in (("header_page", header_page), ("header_event", info.header_event)):
        out += label.encode() + b"\0" + _num(len(text), 8, big) + text.encode()
    out += _num(len(info.ftrace_formats), 4, big)
    for t in info.ftrace_formats:
        out += _num(len(t.encode()), 8, big) + t.encode()
    systems: dict[str, list[str]] = {}
    for system, t in info.event_formats:
        systems.setdefault(system, []).append(t)
    out += _num(len(systems), 4, big)
    for system, texts in systems.items():
        out += system.encode() + b"\0" + _num(len(texts), 4, big)
        for t in texts:
            out += _num(len(t.encode()), 8, big) + t.encode()
    for text, width in ((info.kallsyms, 4), (info.printk, 4), (info.cmdlines, 8)):
        out += _num(len(text.encode()), width, big) + text.encode()
    top = info.buffers[0]
    out += _num(len(top.cpus), 4, big)
    uname = b"Linux re-encoded\0"
    out += b"options  \0" + _num(L.OPT_UNAME, 2, big) + _num(len(uname), 4, big) + uname
    for oid, data in options:
        out += _num(oid, 2, big) + _num(len(data), 4, big) + data
    out += _num(0, 2, big)
    out += b"flyrecord\0"
    table_at = len(out)
    out += bytes(16 * len(top.cpus))
    blob = Blob(raw, str(src))
    cpu_pages = []
    for c in top.cpus:
        chunks = cpu_chunks(blob, info, top, c)
        data = np.zeros(sum(ch[2] for ch in chunks), np.uint8)
        fill_chunks(blob, info, chunks, data, top.compressed)
        pages = []
        for p0 in range(0, len(data) // ps * ps, ps):
            pages.append(_page(bytes(data[p0:p0 + ps]), ps, hdr_src, hdr_dst, big, long_size, formats, padded))
        cpu_pages.append(b"".join(pages))
    for i, blob_pages in enumerate(cpu_pages):
        pad = -len(out) % ps
        out += bytes(pad)
        out[table_at + 16 * i:table_at + 16 * i + 16] = _num(len(out), 8, big) + _num(len(blob_pages), 8, big)
        out += blob_pages
    dst.write_bytes(bytes(out))
    return padded


def _page(page: bytes, ps: int, hdr_src: int, hdr_dst: int, big: bool, long_size: int, formats, padded) -> bytes:
    ts = int.from_bytes(page[:8], "little")
    commit = int.from_bytes(page[8:16], "little")
    size = commit & L.COMMIT_MASK
    data = bytearray(page[hdr_src:hdr_src + size])
    out = bytearray()
    pos = 0
    while pos < size:
        w = int.from_bytes(data[pos:pos + 4], "little")
        tl, delta = w & 31, w >> 5
        if tl == 0:
            ln = 4 + ((int.from_bytes(data[pos + 4:pos + 8], "little") - 4 + 3) & ~3) + 4
            body, arr = pos + 8, True
        elif tl <= L.TYPE_LEN_DATA_MAX:
            ln, body, arr = 4 + 4 * tl, pos + 4, False
        elif tl == L.TYPE_PADDING:
            ln, body, arr = 4 + int.from_bytes(data[pos + 4:pos + 8], "little"), None, True
        else:
            ln, body, arr = 8, None, True
        rec = bytearray(data[pos:pos + ln])
        if body is not None:
            payload = bytearray(data[body:pos + ln])
            fmt = formats.get(int.from_bytes(payload[:2], "little"))
            if long_size == 4 and fmt is not None and any(
                    f.array_len is not None and "long" in f.type for f in fmt.own_fields):
                padded[fmt.full_name] = padded.get(fmt.full_name, 0) + 1
                rec = bytearray(_num(L.TYPE_PADDING << 27 | delta if big else delta << 5 | L.TYPE_PADDING, 4, big)
                                + _num(ln - 4, 4, big) + bytes(ln - 8))
                out += rec
                pos += ln
                continue
            if big and fmt is not None:
                _swap_fields(payload, fmt, 8)
            rec[body - pos:] = payload
        head = tl << 27 | delta if big else w
        rec[0:4] = _num(head, 4, big)
        if arr:
            rec[4:8] = _num(int.from_bytes(data[pos + 4:pos + 8], "little"), 4, big)
        out += rec
        pos += ln
    new = _num(ts, 8, big) + _num(commit if long_size == 8 else commit & 0xFFFFFFFF, long_size, big) + out
    return bytes(new) + bytes(ps - len(new))
