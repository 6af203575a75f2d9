"""The ftrace text reader against the trace.dat of the SAME ring buffer, and against the frames a trace-cmd report
text was printed from.

Data (tests/data/text/, see README there): ``same_buffer*/`` hold the tracefs text (``cat trace``) and the trace.dat
(``trace-cmd extract``) of one buffer, recorded by ``record_same_buffer.sh`` (trace_clock local: µs text; x86-tsc: raw
counter text), and trace-cmd report texts of that trace.dat made by ``tests/golden/regen_text.sh``;
``kvm_synth/`` holds trace-cmd report texts (real libtraceevent plugin output) of synthetic KVM trace.dat files and
the frames they were written from (``tests/golden/regen_text_kvm.py``).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import tracekit

DATA = Path(__file__).resolve().parents[1] / "data" / "text"
SAME = DATA / "same_buffer"
TSC = DATA / "same_buffer_tsc"
SYNTH = DATA / "kvm_synth"

#: fields the text cannot carry back, by (text file, event) → columns that come out null in the text. The plugin's
#: kvm_emulate_insn output omits the mode (flags). (host_clock, whose 6.18 table names the unexpanded enum
#: VDSO_CLOCKMODE_TSC, is compared like any field: tracekit.printfmt.values.KERNEL_ENUMS maps "tsc" back to 1.)
TEXT_NULLS = {
    ("report.txt.zst", "kvm_emulate_insn"): {"flags"},
    ("report_t.txt.zst", "kvm_emulate_insn"): {"flags"},
}


def _scalar_cols(df: pl.DataFrame) -> list[str]:
    return [c for c, t in df.schema.items() if c != "ts" and (t.is_integer() or t == pl.String)]


def _compare(text: tracekit.Trace, dat: tracekit.Trace, *, ts_exact: bool, name: str) -> dict[tuple[str, str], int]:
    """Per (event, column): rows where text and trace.dat differ. Rows are in the same (trace) order on both sides;
    text timestamps are the kernel's µs rounding of the ns (or, for counter clocks, the raw value)."""
    assert sorted(text.event_names) == sorted(dat.event_names)
    diffs: dict[tuple[str, str], int] = {}
    for ev in dat.event_names:
        a, b = text.events(ev), dat.events(ev)
        assert a.height == b.height, ev
        ts_b = b["ts"] if ts_exact else (b["ts"] + 500) // 1000 * 1000
        n = int((a["ts"] != ts_b).sum())
        if n:
            diffs[(ev, "ts")] = n
        for c in _scalar_cols(b):
            if c not in a.columns:   # trace-cmd report has no irq-flags column
                assert c in ("common_flags", "common_preempt_count"), (ev, c)
                continue
            if c in TEXT_NULLS.get((name, ev), ()):
                assert a[c].null_count() == a.height, (ev, c)
                continue
            col = a[c].cast(b.schema[c])
            n = int((col.ne_missing(b[c])).sum())
            if n:
                diffs[(ev, c)] = n
    return diffs


@pytest.fixture(scope="module")
def dat_local():
    return tracekit.load(SAME / "trace.dat")


def test_tracefs_text_equals_trace_dat(dat_local):
    text = tracekit.load(SAME / "trace.txt.zst")
    assert text.format == "ftrace-text" and text.metadata["compression"] == "zstd"
    assert text.unparsed_lines.height == 0
    assert text.total_events == dat_local.total_events == 3542
    assert text.metadata["entries"] == "3542/3542" and text.metadata["cpus"] == 2
    assert _compare(text, dat_local, ts_exact=False, name="trace.txt.zst") == {}
    assert {d.expected.split()[1] for d in text.damage} <= {"kvm_update_master_clock", "kvm_track_tsc"}


def test_tracefs_counter_clock_text_equals_trace_dat_exactly():
    text, dat = tracekit.load(TSC / "trace.txt.zst"), tracekit.load(TSC / "trace.dat")
    assert dat.metadata.get("clock") == "x86-tsc"
    assert _compare(text, dat, ts_exact=True, name="trace.txt.zst") == {}


def test_kernel_stacks_equal_trace_dat(dat_local):
    text = tracekit.load(SAME / "trace.txt.zst")
    a, b = text.events("kernel_stack"), dat_local.events("kernel_stack")
    assert a.schema["callers"] == pl.List(pl.String)
    assert a["callers"].to_list() == b["callers"].to_list()
    assert (a["size"] == a["callers"].list.len()).all()


def test_irq_flags_column_decodes_to_common_flags(dat_local):
    text = tracekit.load(SAME / "trace.txt.zst")
    for ev in ("sched_switch", "contention_begin", "softirq_raise", "kernel_stack"):
        a, b = text.events(ev), dat_local.events(ev)
        assert a["common_flags"].to_list() == b["common_flags"].to_list(), ev
        assert a["common_preempt_count"].to_list() == b["common_preempt_count"].to_list(), ev
        assert a["common_comm"].to_list() == b["common_comm"].to_list(), ev


@pytest.mark.parametrize("name,ts_exact", [("report.txt.zst", False), ("report_t.txt.zst", True),
                                           ("report_R.txt.zst", False)])
def test_trace_cmd_report_text_equals_trace_dat(dat_local, name, ts_exact):
    text = tracekit.load(SAME / name)
    assert text.unparsed_lines.height == 0 and text.damage == []
    assert text.metadata["cpus"] == 2
    diffs = _compare(text, dat_local, ts_exact=ts_exact, name=name)
    if name == "report_R.txt.zst":
        assert diffs == {}
    else:
        # libtraceevent's sched_switch plugin prints R for a preempted task: the +0x100 bit is not in the text
        assert diffs == {("sched_switch", "prev_state"): 1}
        b = dat_local.events("sched_switch")
        assert (b["prev_state"] & 0x100 != 0).sum() == 1


def test_trace_cmd_stack_addresses(dat_local):
    text = tracekit.load(SAME / "report.txt.zst")
    a, b = text.events("kernel_stack"), dat_local.events("kernel_stack")
    assert a["callers"].to_list() == b["callers"].to_list()
    assert a["caller"].to_list() == b["caller"].to_list()


@pytest.mark.parametrize("isa", ["vmx", "svm"])
@pytest.mark.parametrize("suffix", ["", "_R"])
def test_kvm_plugin_forms(isa, suffix):
    text = tracekit.load(SYNTH / f"{isa}_report{suffix}.txt.zst", formats=SYNTH / f"{isa}.dat")
    assert text.unparsed_lines.height == 0 and text.damage == []
    assert text.metadata["cpus"] == 3
    assert text.lost_events.to_dicts() == [{"cpu": 1, "lost": 5, "lost_unknown": 0}]
    plugin_omits = {"kvm_exit": {"intr_info", "error_code", "requests"},
                    "kvm_entry": {"immediate_exit", "intr_info", "error_code"}} if not suffix else {}
    for f in sorted(SYNTH.glob(f"{isa}.*.parquet")):
        key = ":".join(f.name.split(".")[1:3])
        want, got = pl.read_parquet(f), text.events(key)
        assert got.height == want.height, key
        assert (got["ts"] == (want["ts"] + 500) // 1000 * 1000).all(), key
        assert got["common_comm"].str.contains("KVM|idle").all() or key.endswith("sched_switch"), key
        for c in want.columns:
            if c in ("ts", "ip", "parent_ip") or c in plugin_omits.get(key.split(":")[1], ()):
                continue
            if c == "prev_state" and not suffix:   # plugin drops the preempted (+) bit
                assert got[c].to_list() == [v & 0xFF for v in want[c].to_list()]
                continue
            assert got[c].cast(want.schema[c]).to_list() == want[c].to_list(), (key, c)
    # function events printed by name get the symbol's start address through the trace.dat's kallsyms
    fn = text.events("function")
    assert text.kallsyms.names_of(fn["ip"]).to_list() == ["kvm_pmu_deliver_pmi"] * fn.height


def test_kvm_exit_vcpu_is_learnt_from_kvm_entry_of_the_thread():
    text = tracekit.load(SYNTH / "vmx_report.txt.zst")
    ex = text.events("kvm_exit")
    assert ex["vcpu_id"].null_count() == 0
    assert (ex.filter(pl.col("common_pid") == 4002)["vcpu_id"] == 1).all()
    assert ex.select(pl.col("exit_reason").unique().sort()).to_series().to_list() == [1, 10, 12, 30, 32, 48]


def test_trace_cmd_report_of_counter_clock_equals_trace_dat_exactly():
    text, dat = tracekit.load(TSC / "report.txt.zst"), tracekit.load(TSC / "trace.dat")
    assert text.unparsed_lines.height == 0
    diffs = _compare(text, dat, ts_exact=True, name="report.txt.zst")
    assert set(diffs) <= {("sched_switch", "prev_state")}   # the plugin's missing "+" bit, as above


def test_frames_have_the_trace_dat_keys_columns_and_dtypes(dat_local):
    text = tracekit.load(SAME / "trace.txt.zst")
    assert sorted(text.frames) == sorted(dat_local.frames)
    for ev in dat_local.event_names:
        assert text.events(ev).schema == dat_local.events(ev).schema, ev
    # trace-cmd report has no irq-flags column: the same schema without common_flags / common_preempt_count
    report = tracekit.load(SAME / "report.txt.zst")
    for ev in dat_local.event_names:
        want = {c: t for c, t in dat_local.events(ev).schema.items()
                if c not in ("common_flags", "common_preempt_count")}
        assert dict(report.events(ev).schema) == want, ev


def test_raw_report_stack_words_are_the_first_callers(dat_local):
    """trace-cmd -R prints the first 8 caller words (as bytes); they are the trace.dat's first min(size, 8)."""
    a = tracekit.load(SAME / "report_R.txt.zst").events("kernel_stack")
    b = dat_local.events("kernel_stack")
    assert a["size"].to_list() == b["size"].to_list()
    assert a["caller"].to_list() == [c[:8] for c in b["caller"].to_list()]
