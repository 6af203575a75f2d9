"""Evaluation rules of the compiler (libtraceevent 1.8 semantics) on hand-built frames.

Number formatting is checked against Python's ``%`` operator, which implements C printf for integers; the expected
strings of helpers are derived from libtraceevent's print_str_arg/print_arg_pointer (cited per test).
"""

from __future__ import annotations

import ctypes

import numpy as np
import polars as pl
import pytest

from tracekit.formats import builtin_formats, parse_format
from tracekit.printfmt import render_event
from tracekit.printfmt.compile import Compiler, FuncTable
from tracekit.printfmt.grammar import parse_conversions, parse_expr
from tracekit.symbols import Kallsyms

F = builtin_formats()
VALUES = [0, 1, 7, 255, 256, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000, 0x7FFFFFFFFFFFFFFF, (1 << 64) - 1]


def _fmt(fields: str, print_fmt: str):
    text = "name: t\nID: 1\nformat:\n" + fields + f"\nprint fmt: {print_fmt}\n"
    return parse_format(text, "test")


_LIBC = ctypes.CDLL(None)


def _c_printf(spec: str, v: int) -> str:
    """The C library's own snprintf of ``(long long)v`` (libtraceevent passes the value cast to the conversion's
    type; ``%d`` of a 64-bit value prints its low 32 bits signed)."""
    buf = ctypes.create_string_buffer(128)
    conv = next(c for c in parse_conversions(spec) if not isinstance(c, str))
    bits = {-2: 8, -1: 16, 0: 32, 1: 64, 2: 64}[conv.length]
    v &= (1 << bits) - 1
    if v >> (bits - 1):
        v -= 1 << bits
    cspec = conv.spec if conv.length > 0 else conv.spec.replace("hh", "").replace("h", "")
    if conv.length <= 0:
        cspec = cspec[:-1] + "ll" + cspec[-1]
        if conv.conv not in "di":
            v &= (1 << bits) - 1
    elif conv.length == 1:
        cspec = cspec.replace("l", "ll")
    else:
        cspec = cspec.replace("L", "ll")      # glibc reads L before an integer conversion as ll
    _LIBC.snprintf(buf, 128, cspec.encode(), ctypes.c_longlong(v))
    return buf.value.decode() + spec[len(conv.spec):]


@pytest.mark.parametrize("spec", ["%d", "%u", "%x", "%X", "%o", "%ld", "%lu", "%lx", "%llx", "%lld", "%hd", "%hu",
                                  "%hhx", "%08x", "%-6d|", "%5u", "%#x", "%#010llx", "%016llx", "%+d", "%03d",
                                  "%.3d", "%#o", "%010lu", "%.0x", "%-#8x|", "% d", "%Lu", "%5.3x"])
def test_numbers_follow_c_printf(spec: str) -> None:
    fmt = _fmt("\tfield:u64 v;\toffset:8;\tsize:8;\tsigned:0;", f'"{spec}", REC->v')
    df = pl.DataFrame({"v": VALUES}, schema={"v": pl.UInt64})
    got = render_event(df, fmt).to_list()
    assert got == [_c_printf(spec, v) for v in VALUES]


def test_fields_read_unsigned_and_casts_mask() -> None:
    # eval_num_arg reads a field at its width without sign extension; (u8)/(int) casts mask, (long) does not
    fmt = _fmt("\tfield:int a;\toffset:8;\tsize:4;\tsigned:1;",
               '"%llu %d %llx %u %lld", REC->a, REC->a, (u8)REC->a, REC->a < 0, (long)REC->a')
    df = pl.DataFrame({"a": [-1, 5]}, schema={"a": pl.Int32})
    assert render_event(df, fmt).to_list() == ["4294967295 -1 ff 0 4294967295", "5 5 5 0 5"]


def test_arithmetic_wraps_and_divides_by_zero_as_zero() -> None:
    fmt = _fmt("\tfield:u32 a;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:u32 b;\toffset:12;\tsize:4;\tsigned:0;",
               '"%llu %llu %llu %llu %d", REC->a - REC->b, REC->a / REC->b, REC->a << REC->b, ~REC->a, '
               'REC->a == 3 && REC->b')
    df = pl.DataFrame({"a": [3, 1], "b": [4, 0]}, schema={"a": pl.UInt32, "b": pl.UInt32})
    assert render_event(df, fmt).to_list() == [
        f"{(3 - 4) & ((1 << 64) - 1)} 0 48 {~3 & ((1 << 64) - 1)} 1",
        f"1 0 1 {~1 & ((1 << 64) - 1)} 0",
    ]


def test_print_symbolic_and_flags_like_libtraceevent() -> None:
    # unknown symbol -> 0x%llx; flags joined by the delimiter, left-over bits appended as 0x%llx;
    # a name eval_flag() cannot evaluate (HRTIMER_MODE_ABS) never matches
    fmt = _fmt("\tfield:u32 a;\toffset:8;\tsize:4;\tsigned:0;",
               '"%s %s %s", __print_symbolic(REC->a, { 1, "ONE" }, { 2, "TWO" }), '
               '__print_flags(REC->a, "|", { 1, "A" }, { 4, "C" }), '
               '__print_symbolic(REC->a, { HRTIMER_MODE_ABS, "ABS" }, { TIMER_SOFTIRQ, "T" })')
    df = pl.DataFrame({"a": [1, 2, 5, 13, 0]}, schema={"a": pl.UInt32})
    assert render_event(df, fmt).to_list() == [
        "ONE A T", "TWO 0x2 0x2", "0x5 A|C 0x5", "0xd A|C|0x8 0xd", "0x0  0x0"]


def test_pointer_conversions() -> None:
    ks = Kallsyms(np.array([0x1000, 0x2000, 0x3000], dtype=np.uint64), np.array(["foo", "bar", "last"], dtype=object))
    fmt = _fmt("\tfield:unsigned long ip;\toffset:8;\tsize:8;\tsigned:0;", '"%p %ps %pS %pF", REC->ip, REC->ip, '
               'REC->ip, REC->ip')
    df = pl.DataFrame({"ip": [0, 0x1000, 0x1010, 0x3000, 0x3001, 0x10]}, schema={"ip": pl.UInt64})
    got = render_event(df, fmt, funcs=FuncTable(ks)).to_list()
    assert got == [
        "(nil) 0x0 0x0 0x0",                                   # glibc %p of NULL; no symbol at 0
        "0x1000 foo foo+0x0 foo+0x0",
        "0x1010 foo foo+0x10 foo+0x10",
        "0x3000 last last+0x0 last+0x0",
        "0x3001 0x3001 0x3001 0x3001",                          # past the last symbol only an exact match counts
        "0x10 0x10 0x10 0x10",
    ]


def test_strings_widths_and_ternaries() -> None:
    fmt = _fmt("\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:int x;\toffset:24;\tsize:4;"
               "\tsigned:1;", '"[%-6s][%6s][%.2s] %s%%", REC->comm, REC->comm, REC->comm, REC->x ? "yes" : "no"')
    df = pl.DataFrame({"comm": ["bash", "kworker/0:1"], "x": [0, 3]}, schema={"comm": pl.String, "x": pl.Int32})
    assert render_event(df, fmt).to_list() == ["[bash  ][  bash][ba] no%", "[kworker/0:1][kworker/0:1][kw] yes%"]


def test_unknown_helper_prints_failed_to_parse_with_raw_fields() -> None:
    # libtraceevent: "function %s not defined" -> [FAILED TO PARSE] + " name=value" (print_field_raw)
    fmt = _fmt("\tfield:int a;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:unsigned long b;\toffset:16;\tsize:8;"
               "\tsigned:0;\n\tfield:char c[4];\toffset:24;\tsize:4;\tsigned:0;",
               '"%d %s", REC->a, frobnicate(REC->b)')
    df = pl.DataFrame({"a": [-2], "b": [255], "c": ["ok"]}, schema={"a": pl.Int32, "b": pl.UInt64, "c": pl.String})
    assert render_event(df, fmt).to_list() == ["[FAILED TO PARSE] a=-2 b=0xff c=ok"]


def test_kernel_stack_prints_eight_callers_zero_filled() -> None:
    fmt = F["ftrace:kernel_stack"]
    ks = Kallsyms(np.array([0x1000, 0x2000], dtype=np.uint64), np.array(["f", "g"], dtype=object))
    df = pl.DataFrame({"size": [2], "caller": [[0x1004, 0x1008]]}, schema={"size": pl.Int32, "caller": pl.List(pl.UInt64)})
    got = render_event(df, fmt, funcs=FuncTable(ks)).to_list()[0]
    assert got == "\t=> f\n\t=> f" + "\n\t=> 0x0" * 6


def test_compiler_num_is_an_expression_over_the_frame() -> None:
    fmt = F["kvm:kvm_msi_set_irq"]
    comp = Compiler(fmt, fmt.schema())
    e = comp.num(parse_expr("(u8)(REC->address >> 12) | ((REC->address >> 32) & 0xffffff00)"))
    df = pl.DataFrame({"address": [0xFEE01000 | (0x12345600 << 32)]}, schema={"address": pl.UInt64})
    assert df.select(e).item() == 0x01 | 0x12345600


def test_bitmask_like_print_bitmask_to_seq() -> None:
    # bytes printed from the last one, a comma every 32 bits counted from the low end
    fmt = _fmt("\tfield:__data_loc unsigned long[] mask;\toffset:8;\tsize:4;\tsigned:0;", '"m=%s", __get_bitmask(mask)')
    df = pl.DataFrame({"mask": [[0x5, 0x100000000], [0xFF]]}, schema={"mask": pl.List(pl.UInt64)})
    assert render_event(df, fmt).to_list() == ["m=00000001,00000000,00000000,00000005", "m=00000000,000000ff"]


def test_percent_s_of_a_long_field_is_a_printk_string_or_hex() -> None:
    # print_str_arg: a non-array field of long size is looked up in the printk formats, else printed "%llx"
    fmt = _fmt("\tfield:unsigned long fmt;\toffset:8;\tsize:8;\tsigned:0;", '"[%s]", REC->fmt')
    df = pl.DataFrame({"fmt": [0xFFFF0001, 0xABC]}, schema={"fmt": pl.UInt64})
    assert render_event(df, fmt, printk={0xFFFF0001: "hello"}).to_list() == ["[hello]", "[abc]"]


def test_kernel_stack_from_text_input_prints_caller_names() -> None:
    # text inputs (tracefs, trace-cmd report) give the frames as names in ``callers`` and no addresses
    fmt = F["ftrace:kernel_stack"]
    df = pl.DataFrame({"size": [2], "caller": [None], "callers": [["f", "g"]]},
                      schema={"size": pl.Int32, "caller": pl.List(pl.UInt64), "callers": pl.List(pl.String)})
    assert render_event(df, fmt).to_list() == ["\t=> f\n\t=> g" + "\n\t=> 0x0" * 6]


def test_network_address_conversions() -> None:
    # print_mac_arg: %pM "xx:xx:…", %pm without separators; print_ip4_addr: %pI4 dotted decimal
    fmt = _fmt("\tfield:unsigned char mac[6];\toffset:8;\tsize:6;\tsigned:0;\n"
               "\tfield:unsigned char ip[4];\toffset:14;\tsize:4;\tsigned:0;",
               '"%pM %pm %pI4", REC->mac, REC->mac, REC->ip')
    df = pl.DataFrame({"mac": [[0, 0x1B, 0x21, 0xA, 0xB, 0xFF]], "ip": [[192, 168, 0, 1]]},
                      schema={"mac": pl.List(pl.UInt8), "ip": pl.List(pl.UInt8)})
    assert render_event(df, fmt).to_list() == ["00:1b:21:0a:0b:ff 001b210a0bff 192.168.0.1"]


def test_bprint_prints_ip_and_decoded_text() -> None:
    # pretty_print with TEP_EVENT_FL_ISBPRINT: "%ps: " + the printk format applied to the args; an address missing
    # from printk_formats gives "(NO FORMAT FOUND at %llx)"
    fmt = F["ftrace:bprint"]
    ks = Kallsyms(np.array([0x1000, 0x2000], dtype=np.uint64), np.array(["do_it", "other"], dtype=object))
    df = pl.DataFrame({"ip": [0x1008, 0x1000], "fmt": [0xFF00, 0x5], "text": ["x=3\n", None]},
                      schema={"ip": pl.UInt64, "fmt": pl.UInt64, "text": pl.String})
    assert render_event(df, fmt, funcs=FuncTable(ks)).to_list() == ["do_it: x=3", "do_it: (NO FORMAT FOUND at 5)"]
