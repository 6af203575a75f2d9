"""A pyparsing grammar of the ``print fmt:`` line of Linux trace event formats, turned into a small AST.

Implements the text the kernel writes after ``print fmt:`` in ``events/<system>/<event>/format`` (Linux 6.x, as
read by libtraceevent 1.8 ``event-parse.c``): a C string literal (adjacent literals concatenated) with printk
conversions, then a comma-separated list of C expressions over ``REC->field``. Supported: integer and character
literals, ``REC->f`` and ``(REC)->f``, ``f[i]``, casts to scalar and pointer types, unary ``- + ! ~``, the binary
operators of C with C's precedence, ``?:``, ``sizeof``, calls (the ``__print_*`` / ``__get_*`` helpers and any other
name, kept as a :class:`Call` node) whose arguments may be ``{ value, "name" }`` pairs, and GNU statement expressions
``({ ... })`` (kept as :class:`Raw`; libtraceevent cannot evaluate them either).

:func:`parse_print_fmt` returns a :class:`PrintFmt`; :func:`parse_conversions` splits its format string into literal
text and :class:`Conversion` pieces exactly as libtraceevent's ``parse_args`` does.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import pyparsing as pp

from ..errors import ParseError

__all__ = [
    "Node", "Num", "Str", "Ident", "Field", "Index", "Cast", "Unary", "Binary", "Cond", "Call", "Pair", "Sizeof", "Raw",
    "PrintFmt", "Conversion", "parse_print_fmt", "parse_expr", "parse_conversions", "unescape",
]



# -- AST ---------------------------------------------------------------------------------------------------------------
class Node:
    """Base of the AST nodes (all frozen dataclasses, hashable)."""


@dataclass(frozen=True)
class Num(Node):
    """An integer literal; ``text`` keeps its spelling (libtraceevent evaluates flag values from it)."""

    value: int
    text: str


@dataclass(frozen=True)
class Str(Node):
    """A string literal (adjacent literals already joined, escapes decoded)."""

    value: str


@dataclass(frozen=True)
class Ident(Node):
    """A bare identifier that is not a field (an enum constant such as ``HRTIMER_MODE_ABS``)."""

    name: str


@dataclass(frozen=True)
class Field(Node):
    """``REC->name``."""

    name: str


@dataclass(frozen=True)
class Index(Node):
    """``base[index]``."""

    base: Node
    index: Node


@dataclass(frozen=True)
class Cast(Node):
    """``(type)operand``; ``type`` is normalised to single spaces (``unsigned long long``, ``void *``)."""

    type: str
    operand: Node


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Cond(Node):
    """``test ? then : other``."""

    test: Node
    then: Node
    other: Node


@dataclass(frozen=True)
class Pair(Node):
    """``{ value, name }`` inside ``__print_symbolic`` / ``__print_flags``."""

    value: Node
    name: Node


@dataclass(frozen=True)
class Call(Node):
    """``name(args…)``: a helper (``__print_symbolic``, ``__get_str`` …) or an unknown function, kept by name."""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Sizeof(Node):
    """``sizeof(type)`` (``type`` set) or ``sizeof(expr)``."""

    type: str | None
    operand: Node | None = None


@dataclass(frozen=True)
class Raw(Node):
    """Text the grammar keeps without understanding it (a GNU statement expression ``({ … })``)."""

    text: str


@dataclass(frozen=True)
class PrintFmt:
    """A parsed ``print fmt:`` line: the format string (escapes kept as written) and its arguments."""

    fmt: str
    args: tuple[Node, ...]
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Conversion:
    """One ``%…`` conversion of a format string, as libtraceevent's ``parse_arg_format`` reads it.

    Attributes:
        spec: the conversion text (``%08llx``, ``%ps``, ``%*s``).
        flags: the characters among ``-+#0`` and space, in order.
        width: the field width, ``-1`` for ``*`` (taken from an argument), None when absent.
        precision: digits after ``.``, or None.
        length: ``-2`` (hh) … ``2`` (ll, L), as libtraceevent's ``ls``.
        conv: ``d i u x X o c s p``.
        ext: for ``p``, the extension letters (``s``, ``S``, ``F``, ``I4``, ``M`` …), else "".
    """

    spec: str
    flags: str
    width: int | None
    precision: int | None
    length: int
    conv: str
    ext: str = ""


# -- grammar -----------------------------------------------------------------------------------------------------------
_TYPE_WORDS = {
    "unsigned", "signed", "long", "int", "short", "char", "void", "bool", "_Bool", "const", "volatile",
    "u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "__u8", "__u16", "__u32", "__u64", "__s8", "__s16", "__s32",
    "__s64", "size_t", "ssize_t", "pid_t", "gfp_t", "uintptr_t", "intptr_t", "loff_t", "sector_t", "ktime_t",
    "int8_t", "int16_t", "int32_t", "int64_t", "uint8_t", "uint16_t", "uint32_t", "uint64_t", "__le16", "__le32",
    "__le64", "__be16", "__be32", "__be64", "phys_addr_t", "dma_addr_t", "umode_t", "dev_t",
}


def _unescape_c(body: str) -> str:
    out: list[str] = []
    i = 0
    simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f",
              "v": "\v", "0": "\0"}
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            if m and m.group(0) != "0":
                out.append(chr(int(m.group(0), 8)))
                i += 1 + len(m.group(0))
                continue
            if n == "x":
                m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
                if m:
                    out.append(chr(int(m.group(0), 16)))
                    i += 2 + len(m.group(0))
                    continue
            out.append(simple.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def unescape(fmt: str) -> str:
    """Decode the escapes of a format string the way libtraceevent's ``parse_arg_string`` does (``\\n \\t \\r
    \\\\``, any other escaped character stands for itself)."""
    out: list[str] = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == "\\" and i + 1 < len(fmt):
            n = fmt[i + 1]
            out.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _int_of(text: str) -> int:
    t = text.rstrip("uUlL")
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", t):
        return int(t, 16)
    if re.fullmatch(r"0[0-7]+", t):
        return int(t, 8)
    return int(t or "0", 10)




@dataclass(frozen=True)
class _Paren(Node):
    """A parenthesised expression, kept only while its chain is built (libtraceevent treats it differently)."""

    inner: Node


def _u(n):
    """Drop the parenthesis marker."""
    while isinstance(n, _Paren):
        n = n.inner
    return n


def _fold_unary(tokens):
    t = list(tokens[0])
    node = t[-1]
    for op in reversed(t[:-1]):
        node = Cast(op[1], _u(node)) if isinstance(op, tuple) else Unary(op, _u(node))
    return node


# libtraceevent's get_op_prio(): a smaller number binds tighter
_PRIO = {"*": 6, "/": 6, "%": 6, "+": 7, "-": 7, "<<": 8, ">>": 8, "<": 9, "<=": 9, ">": 9, ">=": 9, "==": 10,
         "!=": 10, "&": 11, "^": 12, "|": 13, "&&": 14, "||": 15, "?": 16}


class _M:
    """A mutable node for replaying libtraceevent's process_op(), which rewrites nodes in place."""

    __slots__ = ("kind", "op", "left", "right", "prio", "leaf", "then", "other")

    def __init__(self, leaf: Node | None = None) -> None:
        self.kind, self.op, self.left, self.right, self.prio = "leaf", "", None, None, 0
        self.leaf, self.then, self.other = leaf, None, None

    def clone(self) -> _M:
        m = _M()
        m.assign(self)
        return m

    def assign(self, o: _M) -> None:
        for k in self.__slots__:
            setattr(self, k, getattr(o, k))

    @classmethod
    def of(cls, n: Node) -> _M:
        inner = n.inner if isinstance(n, _Paren) else None
        inner = _u(inner) if inner is not None else None
        if isinstance(inner, Binary):
            m = cls()
            m.kind, m.op, m.prio = "op", inner.op, _PRIO[inner.op]
            m.left, m.right = cls(inner.left), cls(inner.right)
            return m
        if isinstance(inner, Cond):
            m = cls()
            m.kind, m.op, m.prio = "cond", "?", 0
            m.left, m.then, m.other = cls(inner.test), inner.then, inner.other
            return m
        return cls(n)

    def node(self) -> Node:
        if self.kind == "op":
            return Binary(self.op, self.left.node(), self.right.node())
        if self.kind == "cond":
            return Cond(self.left.node(), self.then, self.other)
        return _u(self.leaf)


def _process_op(items: list, arg: _M, pos: int) -> None:
    """libtraceevent's process_op() over a flat ``operand (op operand)* [? then-else]`` list.

    It differs from C: operators of equal priority group to the right, a parenthesised right operand whose
    operator binds looser is rotated out of its parentheses (``a & (b | c)`` becomes ``(a & b) | c``), and a ``?``
    takes as its test the node being built at that point of the recursion.
    """
    op = items[pos]
    if op == "?":
        then, other = items[pos + 1]
        test = arg.clone()
        arg.kind, arg.op, arg.prio, arg.left, arg.then, arg.other = "cond", "?", 0, test, then, _u(other)
        arg.right = arg.leaf = None
        pos += 2
        if pos < len(items):
            if isinstance(other, Unary):
                # a unary false branch carries on with the rest of the chain itself
                cell = _M(other)
                _process_op(items, cell, pos)
                arg.other = cell.node()
            else:
                _process_op(items, arg, pos)
        return
    left = arg.clone()
    arg.kind, arg.op, arg.left, arg.right, arg.prio, arg.leaf = "op", op, left, None, _PRIO[op], None
    operand = items[pos + 1]
    right = _M.of(operand)
    pos += 2
    if isinstance(operand, Unary) and pos < len(items):
        # a unary operand continues the chain itself before its parent looks at it
        _process_op(items, right, pos)
        pos = len(items)
    if right.kind in ("op", "cond") and _PRIO[op] < _PRIO[right.op]:
        if right.kind == "cond":
            arg.right = right.left
            test = arg.clone()
            arg.kind, arg.op, arg.prio, arg.left, arg.then, arg.other = "cond", "?", 0, test, right.then, right.other
            arg.right = arg.leaf = None
            right = test
        else:
            arg.right = right.left
            tmp = arg.clone()
            arg.assign(right)
            right.assign(tmp)
            arg.left = right
    else:
        arg.right = right
    if pos < len(items):
        nxt = items[pos]
        if _PRIO[nxt] > arg.prio:
            _process_op(items, arg, pos)
        else:
            _process_op(items, right, pos)


_C_PREC = {"*": 10, "/": 10, "%": 10, "+": 9, "-": 9, "<<": 8, ">>": 8, "<": 7, "<=": 7, ">": 7, ">=": 7, "==": 6,
           "!=": 6, "&": 5, "^": 4, "|": 3, "&&": 2, "||": 1}
_DIALECT = {"c": False}


def _c_chain(items: list) -> Node:
    """Fold ``operand (op operand)*`` with ``? then : else`` marks by C's precedence (binary operators left
    associative, ``?:`` lowest and right associative)."""
    if "?" in items:
        q = items.index("?")
        then, other = items[q + 1]
        rest = [other] + items[q + 2:]
        return Cond(_u(_c_chain(items[:q])), then, _u(_c_chain(rest)))
    pos = 0

    def parse(min_prec: int) -> Node:
        nonlocal pos
        left = _u(items[pos])
        pos += 1
        while pos < len(items) and _C_PREC[items[pos]] >= min_prec:
            op = items[pos]
            pos += 1
            left = Binary(op, left, parse(_C_PREC[op] + 1))
        return left

    return parse(0) if len(items) > 1 else items[0]


def _lte_chain(tokens):
    """Build a chain the way libtraceevent's parser does (see :func:`_process_op`), or by C's rules when
    :func:`parse_print_fmt` is asked for the C dialect."""
    items = list(tokens)
    if _DIALECT["c"]:
        return _c_chain(items)
    if len(items) == 1:
        return items[0]
    cell = _M.of(items[0])
    _process_op(items, cell, 1)
    return cell.node()


def _build() -> tuple[pp.ParserElement, pp.ParserElement]:
    LPAR, RPAR, LBRACE, RBRACE, COMMA = map(pp.Suppress, "(){},")
    ident = pp.Regex(r"[A-Za-z_][A-Za-z0-9_]*")
    number = pp.Regex(r"(?:0[xX][0-9a-fA-F]+|\d+)[uUlL]*").set_parse_action(lambda t: Num(_int_of(t[0]), t[0]))
    char_lit = pp.Regex(r"'(?:\\.|[^'\\])+'").set_parse_action(lambda t: Num(ord(_unescape_c(t[0][1:-1])[:1] or "\0"),
                                                                             t[0]))
    one_str = pp.Regex(r'"(?:\\.|[^"\\])*"')
    string = pp.OneOrMore(one_str).set_parse_action(lambda t: Str(_unescape_c("".join(s[1:-1] for s in t))))

    type_word = pp.Regex(r"[A-Za-z_][A-Za-z0-9_]*").add_condition(
        lambda t: t[0] in _TYPE_WORDS or t[0].endswith("_t"))
    type_name = pp.Combine(
        pp.Optional(pp.Keyword("const") + pp.White(" ")) +
        ((pp.Keyword("struct") | pp.Keyword("enum") | pp.Keyword("union")) + pp.White(" ") + ident |
         type_word + pp.ZeroOrMore(pp.Optional(pp.White(" ")) + type_word)) +
        pp.ZeroOrMore(pp.Optional(pp.White(" ")) + pp.Literal("*")), adjacent=False)
    type_name.set_parse_action(lambda t: " ".join(t[0].replace("*", " *").split()).replace("* *", "**"))

    expr = pp.Forward()
    pair = ((LBRACE + expr + COMMA + expr + pp.Optional(COMMA) + RBRACE).set_parse_action(lambda t: Pair(_u(t[0]), _u(t[1])))
            | (LBRACE + RBRACE).set_parse_action(lambda t: Raw("{ }")))   # libtraceevent fails on an empty entry
    arg = pair | expr
    call = (ident + LPAR + pp.Group(pp.Optional(pp.DelimitedList(arg) + pp.Optional(COMMA))) + RPAR
            ).set_parse_action(lambda t: Call(t[0], tuple(_u(a) for a in t[1])))
    sizeof = (pp.Keyword("sizeof") + LPAR + (type_name + pp.FollowedBy(")") | expr) + RPAR).set_parse_action(
        lambda t: Sizeof(t[1], None) if isinstance(t[1], str) else Sizeof(None, _u(t[1])))
    rec_field = ((pp.Keyword("REC") | LPAR + pp.Keyword("REC") + RPAR) + pp.Suppress("->") + ident
                 ).set_parse_action(lambda t: Field(t[-1]))
    stmt_expr = pp.original_text_for(pp.Literal("(") + pp.nested_expr("{", "}") + pp.Literal(")")
                                     ).set_parse_action(lambda t: Raw(t[0]))
    bare = ident.copy().set_parse_action(lambda t: Ident(t[0]))
    primary = (stmt_expr | sizeof | rec_field | call | number | char_lit | string | bare
               | (LPAR + expr + RPAR).set_parse_action(lambda t: _Paren(_u(t[0]))))
    index = (pp.Suppress("[") + expr + pp.Suppress("]"))
    postfix = (primary + pp.ZeroOrMore(index)).set_parse_action(
        lambda t: functools.reduce(lambda b, i: Index(_u(b), _u(i)), t[1:], t[0]))

    cast_op = (LPAR + type_name + RPAR).set_parse_action(lambda t: [("cast", t[0])])
    unary_op = cast_op | pp.Regex(r"!(?!=)|~|-(?![-=>])|\+(?![+=])")
    unary = (pp.ZeroOrMore(unary_op) + postfix).set_parse_action(lambda t: _fold_unary([t]))
    binop = pp.Regex(r"<<|>>|<=|>=|==|!=|&&|\|\||[*/%+\-<>&^|](?![=])")
    # libtraceevent reads the false branch of ?: as one operand and goes on with the whole ?: as a left operand
    qtail = (pp.Literal("?") + expr + pp.Suppress(":") + unary).set_parse_action(
        lambda t: [t[0], (_u(t[1]), t[2])])
    cond = (unary + pp.ZeroOrMore(binop + unary | qtail)).set_parse_action(_lte_chain)
    expr <<= cond

    fmt_str = pp.OneOrMore(one_str).set_parse_action(lambda t: "".join(s[1:-1] for s in t))
    line = (fmt_str("fmt") + pp.Group(pp.ZeroOrMore(COMMA + arg))("args") + pp.Optional(COMMA) + pp.StringEnd())
    return line, expr + pp.StringEnd()


_LINE, _EXPR = _build()


@functools.lru_cache(maxsize=4096)
def parse_print_fmt(text: str, dialect: str = "libtraceevent") -> PrintFmt:
    """Parse the text after ``print fmt:``.

    Args:
        text: e.g. ``"irq=%d name=%s", REC->irq, __get_str(name)``.
        dialect: ``"libtraceevent"`` builds expression trees as libtraceevent 1.8 does (what trace-cmd prints:
            equal priorities group to the right and ``a & (b | c)`` is read as ``(a & b) | c``); ``"c"`` follows C's
            precedence and parentheses (what the kernel meant).

    Returns:
        The format string (escapes as written) and the argument ASTs.

    Raises:
        ParseError: the text is not a string literal followed by C expressions.
    """
    _DIALECT["c"] = dialect == "c"
    pp.ParserElement.reset_cache()
    try:
        res = _LINE.parse_string(text.strip(), parse_all=True)
    except pp.ParseBaseException as exc:
        raise ParseError("print fmt", exc.loc, "a format string and C expression arguments",
                         repr(text[exc.loc:exc.loc + 40])) from exc
    finally:
        _DIALECT["c"] = False
        pp.ParserElement.reset_cache()
    return PrintFmt(res["fmt"], tuple(_u(a) for a in res["args"]), text)


def parse_expr(text: str, dialect: str = "libtraceevent") -> Node:
    """Parse one C expression of a print fmt argument list (``dialect`` as in :func:`parse_print_fmt`).

    Raises:
        ParseError: the text is not such an expression.
    """
    _DIALECT["c"] = dialect == "c"
    pp.ParserElement.reset_cache()
    try:
        return _u(_EXPR.parse_string(text.strip(), parse_all=True)[0])
    except pp.ParseBaseException as exc:
        raise ParseError("expression", exc.loc, "a C expression", repr(text[exc.loc:exc.loc + 40])) from exc
    finally:
        _DIALECT["c"] = False
        pp.ParserElement.reset_cache()


_CONV = re.compile(r"%(?P<body>[#hlLzZ.0-9\-+* ]*)(?P<conv>[A-Za-z%]?)")


def _pointer_ext(rest: str) -> str:
    """The letters after ``%p`` that libtraceevent's ``parse_arg_format_pointer`` consumes."""
    if not rest:
        return ""
    c = rest[0]
    if c in "FSfs":
        return c
    if c in "Mm":
        return c + (rest[1] if len(rest) > 1 and rest[1] in "RF" else "")
    if c in "Ii":
        m = re.match(r"[Ii](?:S[pfs]*|4[hnbl]?|6c?)", rest)
        return m.group(0) if m else ""
    if c == "U":
        m = re.match(r"U[bBlL]?", rest)
        return m.group(0) if m else "U"
    if c == "h":
        m = re.match(r"h[CDN]?", rest)
        return m.group(0) if m else "h"
    return ""


@functools.lru_cache(maxsize=2048)
def parse_conversions(fmt: str) -> tuple[str | Conversion, ...]:
    """Split a format string (escapes as written) into literal text (escapes decoded, ``%%`` → ``%``) and
    :class:`Conversion` pieces, consuming characters as libtraceevent's ``parse_args`` does.

    A ``%`` followed by a character libtraceevent does not know becomes the literal text ``>c<`` (what it prints).
    """
    out: list[str | Conversion] = []
    text: list[str] = []
    i = 0
    n = len(fmt)
    while i < n:
        c = fmt[i]
        if c == "\\" and i + 1 < n:
            text.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(fmt[i + 1], fmt[i + 1]))
            i += 2
            continue
        if c != "%":
            text.append(c)
            i += 1
            continue
        if fmt[i + 1:i + 2] == "%":
            text.append("%")
            i += 2
            continue
        m = _CONV.match(fmt, i)
        body, conv = m.group("body"), m.group("conv")
        if text:
            out.append("".join(text))
            text = []
        if not conv:
            i = m.end()
            continue
        if conv not in "pcduixXos":
            out.append(f">{conv}<")
            i = m.end()
            continue
        ext = _pointer_ext(fmt[m.end():]) if conv == "p" else ""
        length = 0
        for ch in body:
            if ch == "h":
                length -= 1
            elif ch == "l":
                length += 1
            elif ch == "L":
                length = 2
            elif ch in "zZ":
                length = 1
        flags = "".join(ch for ch in re.match(r"[-+#0 ]*", body).group(0))
        wm = re.match(r"(\*|\d+)?(?:\.(\*|\d*))?", body[len(flags):])
        width: int | None = None
        precision: int | None = None
        if wm.group(1):
            width = -1 if wm.group(1) == "*" else int(wm.group(1))
        if wm.group(2) is not None:
            precision = -1 if wm.group(2) == "*" else int(wm.group(2) or 0)
        out.append(Conversion(fmt[i:m.end() + len(ext)], flags, width, precision, length, conv, ext))
        i = m.end() + len(ext)
    if text:
        out.append("".join(text))
    return tuple(out)
