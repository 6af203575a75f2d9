"""function_graph tracer text → ``ftrace:funcgraph_entry``/``funcgraph_exit`` frames, against the trace.dat the text
was printed from.

Fixtures (``tests/data/text/funcgraph/``, made by ``tests/golden/regen_text_funcgraph.py``): a SYNTHETIC trace.dat of
function_graph events (this kernel has no function_graph tracer) written by ``tracekit.testing.write_tracedat``; the
REAL ``trace-cmd report`` output of it (trace-cmd's function-graph form, ``lib/trace-cmd/trace-ftrace.c``: default,
``-t``, ``-O fgraph:tailprint -O fgraph:depth``); and the tracefs layout of the kernel's function_graph tracer
(``kernel/trace/trace_functions_graph.c`` ``print_graph_*``, ``Documentation/trace/ftrace.rst`` "function graph
tracer"), derived line by line from trace-cmd's output with ``funcgraph-abstime`` and ``funcgraph-proc`` on / off.
The small inline texts below follow the same kernel source for the layouts the fixtures do not cover (latency and
relative-time columns, ``funcgraph-tail``, irq arrows, comments, ``(Overruns: N)``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import tracekit

DATA = Path(__file__).resolve().parents[1] / "data" / "text" / "funcgraph"
DAT = DATA / "graph.dat"
COLS = {"funcgraph_entry": ["ts", "cpu", "common_pid", "common_comm", "func", "depth"],
        "funcgraph_exit": ["ts", "cpu", "common_pid", "common_comm", "func", "depth", "calltime", "rettime"]}
TIMES = ("ts", "calltime", "rettime")


@pytest.fixture(scope="module")
def dat():
    return tracekit.load(DAT)


def _pair(dat, text, event: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Both frames of ``event`` in each task's own order (the text puts a leaf's exit at its entry line)."""
    a = dat.events(event).select(COLS[event]).sort("common_pid", maintain_order=True)
    b = text.events(event).select(COLS[event]).sort("common_pid", maintain_order=True, nulls_last=True)
    assert a.height == b.height
    return a, b


def _max_diff(a: pl.Series, b: pl.Series) -> int:
    return int((a.cast(pl.Int128) - b.cast(pl.Int128)).abs().max())


def test_report_ns_equals_trace_dat(dat):
    """``trace-cmd report -t``: every column of both events equals the trace.dat's (func through its kallsyms)."""
    text = tracekit.load(DATA / "report_t.txt.zst", formats=DAT)
    assert text.unparsed_lines.height == 0 and not text.damage
    for event in COLS:
        a, b = _pair(dat, text, event)
        assert a.equals(b), event
    names = tracekit.load(DATA / "report_t.txt.zst").events("funcgraph_exit")
    assert names["func"].null_count() == names.height
    want = dat.events("funcgraph_exit")["func"].replace_strict(
        {a: n for n, a in _kallsyms().items()}, return_dtype=pl.String)
    assert names["func_sym"].sort().equals(want.sort().alias("func_sym"))


def _kallsyms() -> dict[str, int]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("regen", Path(__file__).resolve().parents[1] / "golden"
                                                  / "regen_text_funcgraph.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.KALLSYMS


@pytest.mark.parametrize("name,comm_chars", [("report", None), ("report_tail", None), ("tracefs", 7)])
def test_us_text_within_printed_precision(dat, name, comm_chars):
    """µs timestamps (trace-cmd rounds): times within 500 ns; the tracefs duration column keeps 7 digits (here
    ≤ 10 ns lost); names, depths, tasks and CPUs exact; tracefs cuts comm to 7 characters."""
    text = tracekit.load(DATA / f"{name}.txt.zst", formats=DAT)
    assert text.unparsed_lines.height == 0 and not text.damage
    tol = 500 if name.startswith("report") else 510
    for event in COLS:
        a, b = _pair(dat, text, event)
        for c in COLS[event]:
            if c in TIMES:
                assert _max_diff(a[c], b[c]) <= tol, (event, c)
            elif c == "common_comm" and comm_chars:
                assert b[c].equals(a[c].str.slice(0, comm_chars)), (event, c)
            else:
                assert b[c].equals(a[c]), (event, c)
        if event == "funcgraph_exit":
            dur = _max_diff(a["rettime"] - a["calltime"], b["rettime"] - b["calltime"])
            assert dur <= (0 if name.startswith("report") else 10)


def test_tracefs_without_proc_column_takes_tasks_from_context_switches(dat):
    """Without ``funcgraph-proc`` the task of a line is the last one switched to on its CPU (or the one switched
    away from at the CPU's first switch block); CPUs 1 and 2 never switch, so their lines have no task."""
    text = tracekit.load(DATA / "tracefs_noproc.txt.zst", formats=DAT)
    assert text.unparsed_lines.height == 0 and not text.damage
    for event in COLS:
        a = dat.events(event).select(COLS[event])
        b = text.events(event).select(COLS[event])
        known = b.filter(pl.col("common_pid").is_not_null())
        assert set(known["cpu"].unique()) == {0, 3}
        assert b.filter(pl.col("common_pid").is_null())["cpu"].is_in([1, 2]).all()
        # every line of CPUs 0 and 3 carries the task the trace.dat has for it
        a0 = a.filter(pl.col("cpu").is_in([0, 3])).sort("common_pid", maintain_order=True)
        k0 = known.sort("common_pid", maintain_order=True)
        assert k0["common_pid"].equals(a0["common_pid"])
        assert _max_diff(k0["ts"], a0["ts"]) <= 510


TRACEFS_VARIANTS = """\
# tracer: function_graph
#
#     TIME           REL TIME      CPU  TASK/PID        ||||     DURATION                  FUNCTION CALLS
#      |               |            |    |    |         ||||      |   |                     |   |   |   |
   10.000100 |        100 us |   1)   perf-6001    |  ....  |               |  perf_ioctl() {
   10.000101 |        101 us |   1)   perf-6001    |  d..1. |               |    perf_event_ctx_lock_nested.isra.0() {
   10.000102 |        102 us |   1)   perf-6001    |  d.h1. |   ==========> |
   10.000102 |        102 us |   1)   perf-6001    |  d.h1. |   1.250 us    |    __sysvec_apic_timer_interrupt();
   10.000104 |        104 us |   1)   perf-6001    |  d.h1. |   <========== |
   10.000250 |        250 us |   1)   perf-6001    |  ....  | ! 148.500 us  |    } /* perf_event_ctx_lock_nested.isra.0 */
 (Overruns: 0)
   10.000260 |        260 us |   1)   perf-6001    |  ....  |               |    /* sched_switch: prev_comm=perf */
   10.000300 |        300 us |   1)   perf-6001    |  ....  | ! 200.100 us  |  }
   10.000400 |        400 us |   1)   perf-6001    |  ....  | # 12345.67 us |  } /* kvm_pmu_handle_event */
"""


def test_tracefs_layout_variants(tmp_path):
    """Latency and relative-time columns, irq arrows, ``funcgraph-tail``, a ``}`` without its ``{`` (named by the
    tail), the kernel's 2-decimal duration, a comment (kept as unparsed) and ``(Overruns: N)``."""
    p = tmp_path / "graph.txt"
    p.write_text(TRACEFS_VARIANTS)
    tr = tracekit.load(p)
    ent, ex = tr.events("funcgraph_entry"), tr.events("funcgraph_exit")
    assert ent["func_sym"].to_list() == ["perf_ioctl", "perf_event_ctx_lock_nested.isra.0",
                                         "__sysvec_apic_timer_interrupt"]
    assert ent["depth"].to_list() == [0, 1, 1]
    assert ex["func_sym"].to_list() == ["__sysvec_apic_timer_interrupt", "perf_event_ctx_lock_nested.isra.0",
                                        "perf_ioctl", "kvm_pmu_handle_event"]
    assert ex["rettime"].to_list() == [10_000_102_000 + 1_250, 10_000_250_000, 10_000_300_000, 10_000_400_000]
    assert ex["calltime"].to_list() == [10_000_102_000, 10_000_250_000 - 148_500, 10_000_300_000 - 200_100,
                                        10_000_400_000 - 12_345_670]
    assert set(ent["common_pid"].to_list() + ex["common_pid"].to_list()) == {6001}
    assert tr.unparsed_lines["line"].str.contains("sched_switch").to_list() == [True]


def test_trace_pipe_without_header_or_time_column(tmp_path):
    """``trace_pipe`` of the tracer (no header), default columns (CPU and duration only): sniffed and parsed; no
    time column means no calltime/rettime, and no task."""
    p = tmp_path / "pipe.txt"
    p.write_text(" 0)               |  perf_ioctl() {\n"
                 " 0)   0.702 us    |    perf_event_ctx_lock_nested.isra.0();\n"
                 " 0) + 11.020 us   |  }\n")
    tr = tracekit.load(p)
    ex = tr.events("funcgraph_exit")
    assert ex["func_sym"].to_list() == ["perf_event_ctx_lock_nested.isra.0", "perf_ioctl"]
    assert ex["calltime"].null_count() == 2 and ex["common_pid"].null_count() == 2
    assert ex["depth"].to_list() == [1, 0]


def test_trace_cmd_hex_function_is_the_address(tmp_path):
    """trace-cmd prints ``%llx`` for an address without a symbol: it becomes ``func``."""
    p = tmp_path / "hex.txt"
    p.write_text("cpus=1\n"
                 "  perf-6001  [000]     5.000001: funcgraph_entry:                   |  ffffffffc0a01230() {\n"
                 "  perf-6001  [000]     5.000003: funcgraph_exit:         2.000 us   |  }\n")
    ex = tracekit.load(p).events("funcgraph_exit")
    assert ex["func"].to_list() == [0xFFFFFFFFC0A01230]
    assert ex["calltime"].to_list() == [5_000_001_000]


@pytest.mark.parametrize("name", ["reportR_head", "reportN_head"])
def test_raw_and_print_fmt_forms_get_names(dat, name):
    """``trace-cmd report -R`` / ``-N`` print each record on its own line: the print-fmt inversion reads the
    numbers, the name lands in ``func_sym`` (and ``func`` through the kallsyms of ``formats=``)."""
    text = tracekit.load(DATA / f"{name}.txt.zst", formats=DAT)
    assert text.unparsed_lines.height == 0 and not text.damage
    for event in COLS:
        b = text.events(event)
        assert b["func_sym"].null_count() == 0
        # the head is a cut in time: each task's rows are its first ones, in its own order
        rank = pl.int_range(pl.len()).over("common_pid").alias("_r")
        b = b.select(COLS[event]).with_columns(rank)
        a = dat.events(event).select(COLS[event]).with_columns(rank).join(
            b.select("common_pid", "_r"), on=["common_pid", "_r"], how="semi", maintain_order="left")
        a, b = (x.sort("common_pid", "_r") for x in (a, b))
        for c in COLS[event]:
            if c == "ts":
                assert _max_diff(a[c], b[c]) <= 500
            else:
                assert b[c].equals(a[c]), (event, c)


def test_damaged_duration_gives_null_calltime(tmp_path):
    """A ``}`` whose duration reaches before time 0 (a damaged paste): null calltime, no error."""
    p = tmp_path / "bad.txt"
    p.write_text("cpus=1\n"
                 "  perf-6001  [000]     0.000003: funcgraph_exit:       # 9999.000 us |  } /* perf_ioctl */\n")
    ex = tracekit.load(p).events("funcgraph_exit")
    assert ex["calltime"].to_list() == [None] and ex["rettime"].to_list() == [3_000]
    assert ex["func_sym"].to_list() == ["perf_ioctl"]


def test_lost_close_does_not_name_a_later_one(tmp_path):
    """trace-cmd text where ``inner``'s ``}`` was lost and ``other``'s ``{`` too: the ``}`` at depth 1 under
    ``second`` is not ``inner``'s (``first`` returned in between), so it stays nameless."""
    head = "  perf-6001  [000]     5.{:06d}: {}:"
    lines = [("funcgraph_entry", "                   |  first() {"),
             ("funcgraph_entry", "                   |    inner() {"),
             ("funcgraph_exit", "         9.000 us   |  }"),
             ("funcgraph_entry", "                   |  second() {"),
             ("funcgraph_exit", "         2.000 us   |    }"),
             ("funcgraph_exit", "         4.000 us   |  }")]
    p = tmp_path / "lost.txt"
    p.write_text("cpus=1\n" + "".join(head.format(10 * i, ev) + info + "\n" for i, (ev, info) in enumerate(lines)))
    ex = tracekit.load(p).events("funcgraph_exit")
    assert ex["func_sym"].to_list() == ["first", None, "second"]
