"""ftrace ``bprint`` records (``trace_printk()`` with a constant format): binary arguments back to text.

Implements the argument layout of the kernel's ``vbin_printf()`` (lib/vsprintf.c) as libtraceevent reads it
(event-parse.c, ``make_bprint_args``): numbers 4-byte aligned, of 4 bytes (``int``), the file's long size (``l``,
``z``, ``p``) or 8 (``ll``); ``%s`` inline NUL-terminated strings; ``*`` width/precision as 4-byte ints. The format
string comes from the file's printk formats (``fmt`` is its address). Records are grouped by format; each group is
parsed once and its rows are formatted in Python (bprint is rare: a debugging aid, never the hot path).
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

_SPEC = re.compile(r"%(?P<flags>[-+ #0]*)(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d+))?(?P<len>hh|h|ll|l|z|j|t|L)?"
                   r"(?P<conv>[diouxXcsp%])(?P<pext>[sSfFB]?)")


def _c_unescape(fmt: str) -> str:
    """printk_formats shows the format with C escapes (``\\n``); turn them back into characters."""
    return fmt.replace("\\n", "\n").replace("\\t", "\t").replace('\\"', '"').replace("\\\\", "\\")


def format_args(fmt: str, buf: bytes, long_size: int, big: bool, symbol=None) -> str:
    """Format ``fmt`` with the binary arguments in ``buf`` as the kernel's bstr_printf would.

    Args:
        fmt: the printk format (C escapes already resolved).
        buf: the record's ``buf`` bytes.
        long_size: the kernel's long size; big: the file's byte order.
        symbol: maps an address to a symbol name (for ``%ps``/``%pS``), or None.
    """
    order = "big" if big else "little"
    pos = 0
    out: list[str] = []
    last = 0

    def number(size: int, signed: bool) -> int:
        nonlocal pos
        pos = (pos + 3) & ~3
        raw = buf[pos:pos + size]
        pos += size
        if len(raw) < size:
            return 0
        return int.from_bytes(raw, order, signed=signed)

    for m in _SPEC.finditer(fmt):
        out.append(fmt[last:m.start()])
        last = m.end()
        conv = m["conv"]
        pext = m["pext"] or ""
        if conv != "p" and pext:  # only %p takes an extension letter: give it back to the literal text
            last -= len(pext)
        if conv == "%":
            out.append("%")
            continue
        width = m["width"]
        prec = m["prec"]
        if width == "*":
            width = str(number(4, True))
        if prec == "*":
            prec = str(number(4, True))
        spec = "%" + m["flags"] + (width or "") + (f".{prec}" if prec is not None else "")
        ln = m["len"] or ""
        size = 8 if ln in ("ll", "L", "j") else long_size if ln in ("l", "z", "t") else 4
        if conv == "s":
            end = buf.find(b"\0", pos)
            end = len(buf) if end < 0 else end
            out.append((spec + "s") % buf[pos:end].decode("utf-8", "replace"))
            pos = end + 1
        elif conv == "p":
            addr = number(long_size, False)
            name = symbol(addr) if symbol is not None and pext else None
            out.append((spec + "s") % (name if name is not None else f"0x{addr:x}"))
        elif conv == "c":
            out.append((spec + "c") % chr(number(4, False) & 0xFF))
        else:
            signed = conv in "di"
            val = number(size, signed)
            out.append((spec + ("d" if conv in "iu" else conv)) % val)
    out.append(fmt[last:])
    return "".join(out)


def bprint_text(df: pl.DataFrame, printk: dict[int, str], big: bool, kallsyms, long_size: int = 8) -> pl.Series:
    """The ``text`` column of a bprint frame: each record's message (null when its format address is unknown)."""
    n = df.height
    if n == 0 or "fmt" not in df.columns or "buf" not in df.columns:
        return pl.Series("text", [None] * n, dtype=pl.String)

    def symbol(addr: int) -> str | None:
        if kallsyms is None or not len(kallsyms):
            return None
        name, off = kallsyms.resolve(np.array([addr], np.uint64))
        return None if name[0] is None else (name[0] if not off[0] else f"{name[0]}+0x{int(off[0]):x}")

    texts: list[str | None] = [None] * n
    fmts = df["fmt"].to_numpy()
    bufs = df["buf"]
    elem = np.dtype(">u4" if big else "<u4")
    for addr in np.unique(fmts):
        fmt = printk.get(int(addr))
        if fmt is None:
            continue
        fmt = _c_unescape(fmt)
        for i in np.flatnonzero(fmts == addr):
            raw = np.asarray(bufs[int(i)].to_list(), dtype=np.uint32).astype(elem).tobytes()
            texts[int(i)] = format_args(fmt, raw, long_size, big, symbol)
    return pl.Series("text", texts, dtype=pl.String)
