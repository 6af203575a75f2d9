"""The print fmt inversion on the forms the text reader meets: tracefs text (trailing blanks stripped, ``%p`` without
``0x``, ``(null)``), and input that matches nothing (the frame keeps the input's height)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import zstandard

import tracekit
from tracekit.formats import builtin_formats
from tracekit.printfmt import info_parser

DATA = Path(__file__).resolve().parents[1] / "data" / "text" / "same_buffer"
F = builtin_formats()


def _tracefs_info(event: str) -> pl.Series:
    """The ``info`` texts of one event in the tracefs text of the same_buffer recording, line ends stripped."""
    text = zstandard.ZstdDecompressor().stream_reader((DATA / "trace.txt.zst").open("rb")).read().decode()
    key = f" {event}: "
    return pl.Series([ln.split(key, 1)[1].strip() for ln in text.splitlines() if key in ln])


@pytest.mark.parametrize("name", sorted(F))
def test_frame_height_is_the_input_height_when_nothing_matches(name: str) -> None:
    out = info_parser(F[name])(pl.Series(["no such text", "", "x y z"]))
    assert out.width == 0 or out.height == 3
    assert out.columns == [f.name for f in F[name].own_fields]


def test_kvm_pio_with_its_trailing_blank_stripped_equals_the_trace_dat() -> None:
    info = _tracefs_info("kvm_pio")
    assert len(info) and not info.str.ends_with(" ").any()
    got = info_parser(F["kvm:kvm_pio"])(info)
    want = tracekit.load(DATA / "trace.dat").events("kvm_pio").select(got.columns)
    assert got.height == want.height
    for c in got.columns:
        assert got[c].to_list() == want[c].to_list(), c


def test_tracefs_pointer_without_0x_and_null() -> None:
    info = _tracefs_info("contention_begin")
    assert len(info) and not info.str.starts_with("0x").any()
    got = info_parser(F["lock:contention_begin"])(info)
    want = info.str.split(" ").list.first().str.to_integer(base=16, dtype=pl.UInt64)
    assert got["lock_addr"].cast(pl.UInt64).to_list() == want.to_list()
    assert got["flags"].null_count() == 0
    null = info_parser(F["lock:contention_begin"])(pl.Series(["(null) (flags=SPIN)", "(nil) (flags=READ)"]))
    assert null["lock_addr"].to_list() == [0, 0]
    assert null["flags"].to_list() == [1, 2]


@pytest.mark.parametrize("event", ["kvm_update_master_clock", "kvm_track_tsc"])
def test_kernel_enum_names_in_symbol_tables(event: str) -> None:
    """``{ VDSO_CLOCKMODE_TSC, "tsc" }``: tracefs prints ``tsc`` (the kernel knows the enum), trace-cmd ``0x1``
    (libtraceevent does not); both texts invert to the trace.dat's value, the symbolic column names it, and the
    rendering stays trace-cmd's."""
    tsc = DATA.parent / "same_buffer_tsc"
    dat = tracekit.load(tsc / "trace.dat")
    want = dat.events(event, symbolic=True)
    assert want.height and want["host_clock"].to_list() == [1] * want.height
    assert want["host_clock_name"].to_list() == ["tsc"] * want.height
    fmt = F[f"kvm:{event}"]
    texts = {}
    for name, enum_text in (("trace.txt.zst", "hostclock tsc"), ("report.txt.zst", "hostclock 0x1")):
        text = zstandard.ZstdDecompressor().stream_reader((tsc / name).open("rb")).read().decode()
        key = f" {event}: "
        info = pl.Series([ln.split(key, 1)[1].strip() for ln in text.splitlines() if key in ln])
        assert info.str.contains(enum_text, literal=True).all(), name
        texts[name] = info
        got = info_parser(fmt)(info)
        for c in got.columns:
            assert got[c].to_list() == want[c].to_list(), (name, c)
    rendered = dat.render().filter(pl.col("event") == event)["info"]
    assert rendered.to_list() == texts["report.txt.zst"].to_list()


def test_array_elements_printed_one_by_one_come_back_as_the_list() -> None:
    """sys_enter prints REC->args[0] … REC->args[5] with %lx: the six numbers rebuild the args list (lines from a real
    `trace-cmd report` of the 12.8M-event benchmark trace); a line missing elements leaves the list null."""
    parse = info_parser(builtin_formats()["raw_syscalls:sys_enter"])
    got = parse(pl.Series(["NR 33 (b, 1, 55bb6c11d9bc, 0, 7, b)", "NR 72 (b, 1, 0, 0, 7, b)", "NR 3 (1, 2)"]))
    assert got["id"].to_list() == [33, 72, None]
    assert got["args"].to_list() == [[11, 1, 0x55BB6C11D9BC, 0, 7, 11], [11, 1, 0, 0, 7, 11], None]
    assert got.schema["args"] == pl.List(pl.UInt64)
