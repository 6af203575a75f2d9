"""The print fmt grammar: every bundled Linux 6.18 format parses; C and libtraceevent groupings; conversions."""

from __future__ import annotations

import pytest

from tracekit.errors import ParseError
from tracekit.formats import builtin_formats
from tracekit.printfmt.grammar import (
    Binary,
    Call,
    Cast,
    Cond,
    Conversion,
    Field,
    Index,
    Num,
    Pair,
    Raw,
    Str,
    Unary,
    parse_conversions,
    parse_expr,
    parse_print_fmt,
)

FORMATS = builtin_formats()


@pytest.mark.parametrize("dialect", ["libtraceevent", "c"])
def test_every_builtin_print_fmt_parses(dialect: str) -> None:
    assert len(FORMATS) > 200
    for key, fmt in FORMATS.items():
        pf = parse_print_fmt(fmt.print_fmt, dialect)
        convs = [c for c in parse_conversions(pf.fmt) if isinstance(c, Conversion)]
        stars = sum(1 for c in convs if c.width == -1)
        # one argument per conversion (plus one per '*'), except kernel_stack-like formats print them all
        assert len(pf.args) == len(convs) + stars, key


def test_kvm_exit_isa_ternary() -> None:
    pf = parse_print_fmt(FORMATS["kvm:kvm_exit"].print_fmt)
    reason = pf.args[1]
    assert isinstance(reason, Cond)
    assert reason.test == Binary("==", Field("isa"), Num(1, "1"))
    assert isinstance(reason.then, Call) and reason.then.name == "__print_symbolic"
    assert reason.then.args[0] == Binary("&", Field("exit_reason"), Num(0xFFFF, "0xffff"))
    assert isinstance(reason.other, Call) and reason.other.args[0] == Field("exit_reason")
    pairs = [a for a in reason.other.args if isinstance(a, Pair)]
    assert Pair(Num(0x07C, "0x07c"), Str("msr")) in pairs


def test_expressions() -> None:
    assert parse_expr("(u8)(REC->e >> 56)") == Cast("u8", Binary(">>", Field("e"), Num(56, "56")))
    assert parse_expr("(long)REC->expires - REC->now") == Binary("-", Cast("long", Field("expires")), Field("now"))
    assert parse_expr("(void *)REC->caller[3]") == Cast("void *", Index(Field("caller"), Num(3, "3")))
    assert parse_expr("((u64)(REC)->top << 32)") == Binary("<<", Cast("u64", Field("top")), Num(32, "32"))
    assert parse_expr("!REC->x") == Unary("!", Field("x"))
    assert parse_expr('"APIC_" "ID"') == Str("APIC_ID")
    assert parse_expr("sizeof(unsigned long)").type == "unsigned long"
    assert parse_expr("'a'") == Num(97, "'a'")
    assert isinstance(parse_expr("({ int x = 1; x; })"), Raw)
    assert parse_expr("frob(REC->a, 2)") == Call("frob", (Field("a"), Num(2, "2")))


def test_c_and_libtraceevent_groupings_differ_where_libtraceevent_does() -> None:
    text = "REC->flags & (0x1 | 0x2 | 0x4)"
    c = parse_expr(text, "c")
    assert c == Binary("&", Field("flags"), Binary("|", Binary("|", Num(1, "0x1"), Num(2, "0x2")), Num(4, "0x4")))
    # libtraceevent rotates the looser '|' out of the parentheses (trace-cmd prints timer_start's flags that way)
    lte = parse_expr(text)
    assert lte == Binary("|", Binary("&", Field("flags"), Num(1, "0x1")), Binary("|", Num(2, "0x2"), Num(4, "0x4")))
    # equal priorities group to the right in libtraceevent
    assert parse_expr("a - b - c") == Binary("-", parse_expr("a"), Binary("-", parse_expr("b"), parse_expr("c")))
    assert parse_expr("a - b - c", "c") == Binary("-", Binary("-", parse_expr("a"), parse_expr("b")), parse_expr("c"))
    # precedence that both agree on
    for t in ("a + b * c", "a * b + c", "a == 1 && b & 2", "a | b & c"):
        assert parse_expr(t) == parse_expr(t, "c"), t


def test_conversions() -> None:
    parts = parse_conversions(r"a=%08llx b=%-5d%% c=%#x\tp=%ps q=%pS r=%*s z=%pI4 w=%Lu %y")
    convs = [p for p in parts if isinstance(p, Conversion)]
    assert [c.spec for c in convs] == ["%08llx", "%-5d", "%#x", "%ps", "%pS", "%*s", "%pI4", "%Lu"]
    assert convs[0].flags == "0" and convs[0].width == 8 and convs[0].length == 2
    assert convs[1].flags == "-" and convs[1].width == 5
    assert convs[5].width == -1
    assert convs[6].ext == "I4"
    assert convs[7].length == 2
    assert parts[-1] == ">y<"          # libtraceevent prints an unknown conversion that way
    texts = [p for p in parts if isinstance(p, str)]
    assert " b=" in texts[1] and texts[2] == "% c=" and texts[3] == "\tp="


def test_bad_print_fmt_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_print_fmt('"x=%d", REC->')
    with pytest.raises(ParseError):
        parse_print_fmt("no string")


def test_libtraceevent_reads_one_operand_after_the_colon() -> None:
    # process_cond() takes a single operand as the false branch and the chain goes on with the whole ?: on the left
    # (trace-cmd prints kvm_nested_vmenter's "nested_cr3" where C would print "guest_cr3")
    lte = parse_expr('!REC->t ? "g" : REC->isa == 1 ? "e" : "c"')
    assert lte == Cond(Binary("==", Cond(Unary("!", Field("t")), Str("g"), Field("isa")), Num(1, "1")), Str("e"), Str("c"))
    c = parse_expr('!REC->t ? "g" : REC->isa == 1 ? "e" : "c"', "c")
    assert c == Cond(Unary("!", Field("t")), Str("g"), Cond(Binary("==", Field("isa"), Num(1, "1")), Str("e"), Str("c")))
