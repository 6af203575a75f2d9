"""libtraceevent 1.8's value rules (``event-parse.c``), shared by the compiler, rendering and inversion.

Implements ``eval_type_str`` (casts), ``arg_num_eval``/``eval_flag`` (the values of ``__print_symbolic`` /
``__print_flags`` tables), the helper list of ``process_function`` (what makes an event ``[FAILED TO PARSE]``), the
function map searched by ``%ps`` (kallsyms as ``tep_parse_kallsyms`` loads it, found as ``__find_func`` finds it), and
vectorised hex/octal digits and shifts over UInt64 columns.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from .grammar import Binary, Call, Cast, Cond, Ident, Node, Num, PrintFmt, Raw, Str, Unary

__all__ = ["KERNEL_ENUMS", "KNOWN_HELPERS", "SYMBOLIC_HELPERS", "FuncTable", "flag_value", "failed_reason", "hex_expr", "fold",
           "cast_mask"]

U64 = pl.UInt64
_M64 = (1 << 64) - 1

KNOWN_HELPERS = frozenset({
    "__print_flags", "__print_symbolic", "__print_hex", "__print_hex_str", "__print_array", "__get_str",
    "__get_rel_str", "__get_bitmask", "__get_rel_bitmask", "__get_cpumask", "__get_rel_cpumask",
    "__get_dynamic_array", "__get_rel_dynamic_array", "__get_sockaddr", "__get_sockaddr_rel",
    "__get_dynamic_array_len", "__get_rel_dynamic_array_len", "__builtin_expect",
})
"""Helpers libtraceevent evaluates; any other call makes it print ``[FAILED TO PARSE]`` and the raw fields."""

SYMBOLIC_HELPERS = frozenset({"__print_symbolic", "__print_symbolic_u64", "__print_flags", "__print_flags_u64"})

# libtraceevent's eval_flag() knows these names; any other non-numeric table value is -1
_KNOWN_FLAGS = {
    "HI_SOFTIRQ": 0, "TIMER_SOFTIRQ": 1, "NET_TX_SOFTIRQ": 2, "NET_RX_SOFTIRQ": 3, "BLOCK_SOFTIRQ": 4,
    "IRQ_POLL_SOFTIRQ": 5, "TASKLET_SOFTIRQ": 6, "SCHED_SOFTIRQ": 7, "HRTIMER_SOFTIRQ": 8, "RCU_SOFTIRQ": 9,
    "HRTIMER_NORESTART": 0, "HRTIMER_RESTART": 1,
}
#: Kernel enum constants that 6.x formats print by name in ``__print_symbolic`` tables because no
#: ``TRACE_DEFINE_ENUM`` exports them. Their compiled values, for what the kernel itself prints (tracefs text, the
#: meaning of symbolic columns); libtraceevent does not know them (its eval_flag gives -1, so trace-cmd prints
#: ``0x1``), and rendering keeps that. Sources: include/vdso/clocksource.h (``enum vdso_clock_mode``: NONE first,
#: then ``VDSO_ARCH_CLOCKMODES``, then MAX, TIMENS = INT_MAX) and arch/x86/include/asm/vdso/clocksource.h
#: (``VDSO_ARCH_CLOCKMODES`` = TSC, PVCLOCK, HVCLOCK) — used by kvm_update_master_clock / kvm_track_tsc.
KERNEL_ENUMS = {
    "VDSO_CLOCKMODE_NONE": 0, "VDSO_CLOCKMODE_TSC": 1, "VDSO_CLOCKMODE_PVCLOCK": 2, "VDSO_CLOCKMODE_HVCLOCK": 3,
    "VDSO_CLOCKMODE_MAX": 4, "VDSO_CLOCKMODE_TIMENS": 0x7FFFFFFF,
}
_CAST_MASKS = {"u8": 0xFF, "u16": 0xFFFF, "u32": 0xFFFFFFFF, "s8": 0xFF, "s16": 0xFFFF, "s32": 0xFFFFFFFF}
_HEX_LOWER = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def _c_strtoll(text: str) -> int:
    """``strtoll(text, NULL, 0)``: the longest numeric prefix, 0 when there is none."""
    m = re.match(r"\s*([-+]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if not m:
        return 0
    body = m.group(2)
    v = int(body, 16) if body[:2].lower() == "0x" else int(body, 8) if body.startswith("0") and len(body) > 1 else \
        int(body)
    return -v if m.group(1) == "-" else v


def _const_eval(node: Node) -> int | None:
    """libtraceevent's ``arg_num_eval`` (signed 64-bit, atoms through strtoll); None where it gives up."""
    if isinstance(node, Num):
        return _c_strtoll(node.text)
    if isinstance(node, Ident):
        return 0
    if isinstance(node, Cast):
        v = _const_eval(node.operand)
        return None if v is None else _cast_value(node.type, v & _M64)
    if isinstance(node, Unary):
        v = _const_eval(node.operand)
        if v is None:
            return None
        return {"-": -v, "+": v, "~": ~v}.get(node.op)
    if isinstance(node, Binary):
        a, b = _const_eval(node.left), _const_eval(node.right)
        if a is None or b is None:
            return None
        op = node.op
        ops = {"|": lambda: a | b, "&": lambda: a & b, "||": lambda: int(bool(a or b)), "&&": lambda: int(bool(a and b)),
               "<": lambda: int(a < b), "<<": lambda: a << (b & 63), "<=": lambda: int(a <= b), ">": lambda: int(a > b),
               ">>": lambda: a >> (b & 63), ">=": lambda: int(a >= b), "==": lambda: int(a == b),
               "!=": lambda: int(a != b), "-": lambda: a - b, "+": lambda: a + b}
        if op not in ops:
            return None
        v = ops[op]() & _M64
        return v - (1 << 64) if v >> 63 else v
    return None


def flag_value(node: Node, kernel_enums: bool = False) -> int:
    """The value libtraceevent compares with for one ``{ value, "name" }`` entry (``arg_eval`` then ``eval_flag``):
    a literal as spelled (``0x20`` → 32), an expression folded to decimal, a name it does not know → -1.

    Args:
        node: the entry's value expression.
        kernel_enums: also know the names of :data:`KERNEL_ENUMS` (the kernel's values, not libtraceevent's).

    Returns:
        The value, or -1 for a name that is not known.
    """
    if isinstance(node, Cast):
        return flag_value(node.operand, kernel_enums)
    if isinstance(node, Num):
        text = node.text
    elif isinstance(node, Ident):
        text = node.name
    else:
        v = _const_eval(node)
        if v is None:
            return -1
        text = str(v)
    if text[:1].isdigit():
        return _c_strtoll(text.rstrip("uUlL")) & _M64
    if kernel_enums and text in KERNEL_ENUMS:
        return KERNEL_ENUMS[text]
    return _KNOWN_FLAGS.get(text, -1)


def _fold(n: Node) -> int | None:
    """The unsigned 64-bit value of a subtree without fields (as ``eval_num_arg`` computes it), else None."""
    if isinstance(n, Num):
        return _c_strtoll(n.text) & _M64
    if isinstance(n, Str):
        return _c_strtoll(n.value) & _M64
    if isinstance(n, Ident):
        return 0
    if isinstance(n, Cast):
        v = _fold(n.operand)
        return None if v is None else _cast_value(n.type, v)
    if isinstance(n, Unary):
        v = _fold(n.operand)
        if v is None:
            return None
        return {"-": (-v) & _M64, "+": v, "~": (~v) & _M64, "!": int(v == 0)}.get(n.op)
    if isinstance(n, Binary):
        a, b = _fold(n.left), _fold(n.right)
        if a is None or b is None:
            return None
        op = n.op
        if op in ("/", "%"):
            return 0 if b == 0 else (a // b if op == "/" else a % b)
        r = {"|": a | b, "&": a & b, "^": a ^ b, "+": a + b, "-": a - b, "*": a * b, "<<": a << (b & 63),
             ">>": a >> (b & 63), "<": int(a < b), "<=": int(a <= b), ">": int(a > b), ">=": int(a >= b),
             "==": int(a == b), "!=": int(a != b), "&&": int(bool(a and b)), "||": int(bool(a or b))}.get(op)
        return None if r is None else r & _M64
    if isinstance(n, Cond):
        t = _fold(n.test)
        if t is None:
            return None
        return _fold(n.then if t else n.other)
    return None


def _cast_value(ctype: str, v: int) -> int:
    t = ctype.strip()
    if t.endswith("*") or t.startswith("struct"):
        return v
    if t in _CAST_MASKS:
        return v & _CAST_MASKS[t]
    if t.startswith("unsigned "):
        t = t[9:]
    return v & {"char": 0xFF, "short": 0xFFFF, "int": 0xFFFFFFFF}.get(t, _M64)


def _cast_mask(ctype: str) -> int | None:
    m = _cast_value(ctype, _M64)
    return None if m == _M64 else m


def failed_reason(pf: PrintFmt) -> str | None:
    """Why libtraceevent would fail to parse this print fmt (an unknown helper, a statement expression), or None."""
    def walk(n: Node | None) -> str | None:
        if n is None:
            return None
        if isinstance(n, Raw):
            return "an empty table entry" if n.text == "{ }" else "statement expression"
        if isinstance(n, Call):
            if n.name not in KNOWN_HELPERS:
                return f"function {n.name} not defined"
            for a in n.args:
                r = walk(a)
                if r:
                    return r
            return None
        for attr in ("operand", "left", "right", "test", "then", "other", "base", "index", "value", "name"):
            sub = getattr(n, attr, None)
            if isinstance(sub, Node):
                r = walk(sub)
                if r:
                    return r
        return None

    for a in pf.args:
        r = walk(a)
        if r:
            return r
    return None


class FuncTable:
    """libtraceevent's function map built from a kallsyms table, searched the way it searches it.

    Types ``A``/``a`` and ``$`` names are left out. libtraceevent prepends each symbol to a list, sorts the list by
    address (glibc's stable merge sort) and finds an address with ``bsearch`` and ``func_bcmp``; among symbols sharing
    an address the one found depends on where the binary search lands, so the search is replayed here, vectorised
    over all addresses at once (one numpy step per halving).
    """

    def __init__(self, kallsyms) -> None:
        self._names: pl.Series | None = None
        if kallsyms is None or not len(kallsyms):
            self.addrs = np.zeros(0, dtype=np.uint64)
            self.names = np.zeros(0, dtype=object)
            return
        types = np.asarray(kallsyms.types, dtype=object)
        names = np.asarray(kallsyms.names, dtype=object)
        addrs = np.asarray(kallsyms.addrs, dtype=np.uint64)
        keep = ~np.isin(types, np.array(["A", "a"], dtype=object))
        keep &= ~np.char.startswith(names.astype(str), "$")
        addrs, names = addrs[keep], names[keep]
        # Kallsyms keeps file order among equal addresses; libtraceevent's list holds them reversed
        order = np.lexsort((-np.arange(len(addrs)), addrs))
        self.addrs = addrs[order]
        self.names = names[order]

    def lookup(self, a: np.ndarray) -> tuple[np.ndarray, pl.Series, np.ndarray]:
        """(found mask, names as a String Series — null where not found —, offsets) of addresses ``a``."""
        n = len(self.addrs)
        a = np.asarray(a, dtype=np.uint64)
        if len(a) > 64:
            uniq, inv = np.unique(a, return_inverse=True)
            if len(uniq) < len(a) // 2:
                f, nm, off = self.lookup(uniq)
                return f[inv], nm.gather(pl.Series(inv.ravel(), dtype=pl.UInt32)), off[inv]
        if not n:
            return np.zeros(len(a), bool), pl.Series([None] * len(a), dtype=pl.String), np.zeros(len(a), np.uint64)
        if self._names is None:
            self._names = pl.Series(self.names.tolist(), dtype=pl.String)
        nxt = np.append(self.addrs[1:], np.uint64(0))
        lo = np.zeros(len(a), dtype=np.int64)
        hi = np.full(len(a), n, dtype=np.int64)
        res = np.full(len(a), -1, dtype=np.int64)
        active = lo < hi
        while active.any():
            idx = (lo + hi) // 2
            sidx = np.minimum(idx, n - 1)
            b = self.addrs[sidx]
            eq = active & ((a == b) | ((a > b) & (a < nxt[sidx])))
            res = np.where(eq, idx, res)
            less = a < b
            hi = np.where(active & ~eq & less, idx, hi)
            lo = np.where(active & ~eq & ~less, idx + 1, lo)
            active = active & ~eq & (lo < hi)
        found = res >= 0
        safe = np.where(found, res, 0)
        names = self._names.gather(pl.Series(safe, dtype=pl.UInt32))
        names = pl.select(pl.when(pl.Series(found)).then(names)).to_series()
        offs = np.where(found, a - self.addrs[safe], 0).astype(np.uint64)
        return found, names, offs


def _hex_np(a: np.ndarray, upper: bool = False) -> np.ndarray:
    """Hex digits of uint64 values, without leading zeros (0 → "0"), as an object array of str."""
    a = np.ascontiguousarray(a, dtype=np.uint64)
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nib = ((a[:, None] >> shifts[None, :]) & np.uint64(0xF)).astype(np.uint8)
    table = _HEX_UPPER if upper else _HEX_LOWER
    chars = np.ascontiguousarray(table[nib])
    s = chars.view("S16").ravel()
    return s


def hex_expr(e: pl.Expr, upper: bool = False) -> pl.Expr:
    """``%llx`` of a UInt64 expression, vectorised."""
    def f(s: pl.Series) -> pl.Series:
        raw = _hex_np(s.fill_null(0).to_numpy(), upper)
        out = pl.Series(raw, dtype=pl.Binary).cast(pl.String).str.strip_chars_start("0")
        return out.replace("", "0")
    return e.cast(U64).map_batches(f, return_dtype=pl.String)


def _oct_expr(e: pl.Expr) -> pl.Expr:
    def f(s: pl.Series) -> pl.Series:
        a = s.fill_null(0).to_numpy().astype(np.uint64)
        shifts = np.arange(63, -3, -3, dtype=np.uint64)
        dig = ((a[:, None] >> shifts[None, :]) & np.uint64(7)).astype(np.uint8) + np.uint8(48)
        raw = np.ascontiguousarray(dig).view("S22").ravel()
        return pl.Series(raw, dtype=pl.Binary).cast(pl.String).str.strip_chars_start("0").replace("", "0")
    return e.cast(U64).map_batches(f, return_dtype=pl.String)


def _shift(left: pl.Expr, right: pl.Expr, op: str) -> pl.Expr:
    def f(s: pl.Series) -> pl.Series:
        a = s.struct.field("l").fill_null(0).to_numpy().astype(np.uint64)
        b = s.struct.field("r").fill_null(0).to_numpy().astype(np.uint64) & np.uint64(63)
        return pl.Series(np.left_shift(a, b) if op == "<<" else np.right_shift(a, b), dtype=U64)
    return pl.struct(left.alias("l"), right.alias("r")).map_batches(f, return_dtype=U64)


def _int_bits(dt: pl.DataType) -> int:
    for cls, bits in ((pl.Int8, 8), (pl.Int16, 16), (pl.Int32, 32), (pl.UInt8, 8), (pl.UInt16, 16), (pl.UInt32, 32)):
        if dt == cls:
            return bits
    return 64



fold = _fold
cast_mask = _cast_mask
