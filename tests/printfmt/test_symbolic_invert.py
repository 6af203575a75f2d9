"""Symbolic columns, and the print fmt inversion read back from trace-cmd's own text."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import tracekit
from tracekit.formats import builtin_formats
from tracekit.printfmt import info_parser, symbolic_columns

from .golden import read_golden

DATA = Path(__file__).resolve().parents[1] / "data"
F = builtin_formats()


@pytest.fixture(scope="module")
def contention() -> tracekit.Trace:
    return tracekit.load(DATA / "tracedat/contention_v7_zstd.dat")


@pytest.fixture(scope="module")
def golden() -> pl.DataFrame:
    return read_golden("tracedat__contention_v7_zstd.N.txt.zst")


def test_symbolic_columns_agree_with_trace_cmd_text(contention, golden) -> None:
    sm = contention.events("contention_begin", symbolic=True)
    want = golden.filter(pl.col("event") == "contention_begin")["info"].str.extract(r"\(flags=(.*)\)$")
    assert sorted(sm["flags_name"].to_list()) == sorted(want.to_list())
    assert set(sm["flags_name"]) <= {"SPIN", "MUTEX", "READ", "WRITE", "RT", "PERCPU"} | {
        a + "|" + b for a in ("SPIN", "READ", "WRITE", "RT") for b in ("READ", "WRITE", "MUTEX", "PERCPU")}
    sw = contention.events("sched_switch", symbolic=True)
    want = golden.filter(pl.col("event") == "sched_switch")["info"].str.extract(r"prev_state=(\S*?)\+? ==>")
    assert sorted(sw["prev_state_name"].to_list()) == sorted(want.to_list())
    sq = contention.events("softirq_entry", symbolic=True)
    want = golden.filter(pl.col("event") == "softirq_entry")["info"].str.extract(r"action=(\w+)")
    assert sorted(sq["vec_name"].to_list()) == sorted(want.to_list())


def test_kvm_symbolic_columns_both_isa() -> None:
    fmt = F["kvm:kvm_exit"]
    df = pl.DataFrame({"exit_reason": [12, 0x78, 0x80000021, 48, 0x400], "isa": [1, 2, 1, 1, 2]},
                      schema={"exit_reason": pl.UInt32, "isa": pl.UInt32})
    out = symbolic_columns(None, fmt, df)
    assert out["exit_reason_name"].to_list() == ["HLT", "hlt", "INVALID_STATE", "EPT_VIOLATION", "npf"]
    fmt = F["kvm:kvm_apic_accept_irq"]
    df = pl.DataFrame({"dm": [0x400, 0, 0x100]}, schema={"dm": pl.UInt16})
    assert symbolic_columns(None, fmt, df)["dm_name"].to_list() == ["NMI", "Fixed", "LowPrio"]
    # no symbolic helper: frame unchanged
    fmt = F["sched:sched_wakeup"]
    df = pl.DataFrame({"pid": [1]}, schema={"pid": pl.Int32})
    assert symbolic_columns(None, fmt, df).columns == ["pid"]


def test_kvm_symbolic_columns_on_writer_traces() -> None:
    for isa in ("vmx", "svm"):
        tr = tracekit.load(DATA / f"printfmt/kvm_{isa}.dat")
        acc = tr.events("kvm_apic_accept_irq", symbolic=True)
        assert set(acc["dm_name"]) <= {"NMI", "Fixed"} and acc.height > 0
        names = tr.events("kvm_exit", symbolic=True)["exit_reason_name"]
        assert names.str.to_uppercase().ne(names).all() == (isa == "svm")


def _compare(frame: pl.DataFrame, back: pl.DataFrame) -> dict[str, int]:
    """Per inverted field, rows where the text gives back the frame's value (null columns are not inverted)."""
    out = {}
    for c in back.columns:
        if back[c].null_count() == back.height:
            continue
        col = c if c in frame.columns else c + "_"
        assert back[c].dtype == frame[col].dtype, c
        out[c] = int((back[c] == frame[col]).fill_null(False).sum())
    return out


@pytest.mark.parametrize("golden_name,rel", [
    ("tracedat__contention_v7_zstd.N.txt.zst", "tracedat/contention_v7_zstd.dat"),
    ("tracedat__multi_buffer.N.txt.zst", "tracedat/multi_buffer.dat"),
    ("printfmt__kvm_vmx.N.txt.zst", "printfmt/kvm_vmx.dat"),
    ("printfmt__kvm_svm.N.txt.zst", "printfmt/kvm_svm.dat"),
])
def test_inversion_of_trace_cmd_text_gives_the_trace_dat_fields(golden_name: str, rel: str) -> None:
    tr = tracekit.load(DATA / rel)
    text = read_golden(golden_name)
    checked = 0
    for name in tr.event_names:
        fmt = tr.format_of(name)
        if fmt is None or fmt.name == "kernel_stack":
            continue
        order = ["ts", "cpu", "common_pid"]
        frame = tr.events(name).sort(order, maintain_order=True)
        rows = text.filter(pl.col("event") == fmt.name).sort(order, maintain_order=True)
        assert rows.height == frame.height, name
        back = info_parser(fmt, tr.metadata.get("long_size", 8))(rows["info"])
        assert back.columns == [f.name for f in fmt.own_fields]
        assert back.schema == pl.Schema(fmt.schema(tr.metadata.get("long_size", 8)))
        unique = frame.select(pl.struct(order).is_unique()).to_series()
        for field, same in _compare(frame.filter(unique), back.filter(unique)).items():
            assert same == int(unique.sum()), (name, field)
            checked += 1
    assert checked >= 5


def test_inversion_reads_kvm_exit_reason_and_isa_from_the_name() -> None:
    parse = info_parser(F["kvm:kvm_exit"])
    out = parse(pl.Series([
        "vcpu 3 reason EPT_VIOLATION rip 0xffffffff81000000 info1 0x0000000000000181 info2 0x0000000000000000 "
        "intr_info 0x00000000 error_code 0x00000000 requests 0x0000000000000000",
        "vcpu 0 reason npf rip 0x10 info1 0x0000000000000001 info2 0x0000000000000000 intr_info 0x00000000 "
        "error_code 0x00000000 requests 0x0000000000000000",
        "not a kvm_exit line",
    ]))
    assert out["exit_reason"].to_list() == [48, 0x400, None]
    assert out["isa"].to_list() == [1, None, None]
    assert out["vcpu_id"].to_list() == [3, 0, None]
    assert out["guest_rip"].to_list() == [0xFFFFFFFF81000000, 0x10, None]


def test_fields_the_text_does_not_carry_are_null() -> None:
    out = info_parser(F["timer:timer_start"])(pl.Series([
        "timer=0xffffc9000007fde8 function=process_timeout expires=4295388749 [timeout=1] bucket_expiry=4295388750 "
        "cpu=1 idx=14 flags=D|P|I"]))
    row = out.row(0, named=True)
    assert row["timer"] == 0xFFFFC9000007FDE8 and row["expires"] == 4295388749
    assert row["function"] is None and row["now"] is None and row["flags"] is None
