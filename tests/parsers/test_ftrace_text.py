"""ftrace text reader: line layouts, pasted text, compression, unparsed lines, bad input.

Fixtures are real tracefs / trace-cmd texts (tests/data/text/, README there); pasted variants are made here from
them by the edits mail and bug trackers make (quote prefixes, dropped columns, CRLF, extra blanks).
"""

from __future__ import annotations

import gzip
import random
import re
from pathlib import Path

import polars as pl
import pytest
import zstandard
from tracekit.parsers import ftrace_text

import tracekit
from tracekit.errors import ConfigError, ParseError, TracekitError

DATA = Path(__file__).resolve().parents[1] / "data" / "text"
SAME = DATA / "same_buffer"
FORMS = DATA / "forms"


def _text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith(b"\x28\xb5\x2f\xfd"):
        raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
    elif raw.startswith(b"\x1f\x8b"):
        raw = gzip.decompress(raw)
    return raw.decode()


@pytest.fixture(scope="module")
def tracefs():
    return tracekit.load(SAME / "trace.txt.zst")


@pytest.fixture(scope="module")
def report():
    return tracekit.load(SAME / "report.txt.zst")


def _own(tr: tracekit.Trace, ev: str) -> pl.DataFrame:
    df = tr.events(ev)
    return df.drop([c for c in df.columns if c in ("cpu", "common_pid", "common_comm", "common_flags",
                                                    "common_preempt_count")])


def test_sniff_accepts_real_texts_and_refuses_binary():
    for p in (SAME / "trace.txt.zst", SAME / "report.txt.zst", FORMS / "tgid.txt", FORMS / "trace_pipe.txt"):
        assert tracekit.detect_format(p) == "ftrace-text", p
    assert not ftrace_text.sniff((SAME / "trace.dat").read_bytes()[:4096])
    assert not ftrace_text.sniff(b"hello world\nnot a trace\n")


@pytest.mark.parametrize("name", ["tgid.txt", "noirqinfo.txt", "trace_pipe.txt"])
def test_tracefs_layouts(name):
    tr = tracekit.load(FORMS / name)
    assert tr.unparsed_lines.height == 0
    lines = [ln for ln in _text(FORMS / name).splitlines() if ln.strip() and not ln.startswith("#")]
    assert tr.total_events == len(lines)
    sw = tr.events("sched_switch")
    assert sw["prev_pid"].null_count() == 0 and sw["next_comm"].null_count() == 0
    assert ("common_flags" in sw.columns) == (name != "noirqinfo.txt")
    # the comm-pid column and the event's own prev_pid agree for every switch
    assert (sw["common_pid"] == sw["prev_pid"]).all()


def test_plugin_and_raw_sched_forms_agree(tracefs, report):
    for ev in ("sched_wakeup", "sched_wakeup_new", "sched_waking", "softirq_raise", "contention_begin"):
        assert _own(tracefs, ev).equals(_own(report, ev)), ev


def test_bare_and_quoted_lines(tmp_path, report):
    """Lines pasted with only `timestamp: event: info`, `>>> ` quotes, CRLF and extra blanks."""
    text = _text(SAME / "report.txt.zst")
    bare = re.sub(r"(?m)^.*?\[\d{3}\]\s+", "", text)
    quoted = "\r\n".join(">>> " + re.sub(r": ", ":   ", ln, count=1) for ln in bare.splitlines())
    p = tmp_path / "pasted.txt"
    p.write_text("From a bug report:\n" + quoted + "\r\n")
    tr = tracekit.load(p)
    assert tr.unparsed_lines["line"].to_list() == ["From a bug report:"]
    for ev in ("sched_switch", "contention_end", "kernel_stack", "kvm_pio", "sched_process_exec"):
        got = _own(tr, ev)
        assert got.equals(_own(report, ev)), ev
        assert tr.events(ev)["cpu"].null_count() == got.height


def test_quoted_gzip_cut_from_a_bug_report(report):
    tr = tracekit.load(SAME / "report_quoted.txt.gz")
    assert tr.metadata["compression"] == "gzip" and tr.unparsed_lines.height == 0
    first = tr.events("sched_switch")
    assert first.equals(report.events("sched_switch").head(first.height))


def test_comm_with_spaces_and_unknown_comm(tmp_path):
    lines = _text(FORMS / "tgid.txt").splitlines()
    ev = next(ln for ln in lines if "sched_switch:" in ln)
    renamed = re.sub(r"^\s*\S+-(\d+)", r"   CPU 0/KVM-\1", ev)
    unknown = re.sub(r"^\s*\S+-(\d+)", r"           <...>-\1", ev)
    p = tmp_path / "t.txt"
    p.write_text("# tracer: nop\n" + renamed + "\n" + unknown + "\n")
    sw = tracekit.load(p).events("sched_switch")
    assert sw["common_comm"].to_list() == ["CPU 0/KVM", None]
    assert sw["common_pid"].n_unique() == 1


def test_instance_buffer_prefix(tmp_path, report):
    """trace-cmd report of a file with several buffers prints ``instance: `` before an instance's lines; the name
    becomes the ``buffer`` column ("" for the top buffer's lines), as in trace.dat frames."""
    lines = _text(SAME / "report.txt.zst").splitlines()
    out = [ln if ln.startswith(("cpus=", "=>")) or i % 3 == 0 else ("tk_big: " if i % 3 == 1 else "vm-2.x: ") + ln
           for i, ln in enumerate(lines)]
    p = tmp_path / "t.txt"
    p.write_text("\n".join(out) + "\n")
    tr = tracekit.load(p)
    assert tr.total_events == report.total_events and tr.unparsed_lines.height == 0
    sw = tr.events("sched_switch")
    assert set(sw["buffer"].unique()) == {"tk_big", "vm-2.x", ""}
    assert sw.drop("buffer").equals(report.events("sched_switch"))


def test_unparsed_lines_are_kept_with_line_numbers(tmp_path, tracefs):
    lines = _text(SAME / "trace.txt.zst").splitlines()
    lines.insert(20, "garbage that is no trace line")
    lines.insert(100, "another: one")
    p = tmp_path / "t.txt"
    p.write_text("\n".join(lines) + "\n")
    tr = tracekit.load(p)
    assert tr.unparsed_lines.to_dicts() == [{"line_no": 21, "line": "garbage that is no trace line"},
                                            {"line_no": 101, "line": "another: one"}]
    assert tr.total_events == tracefs.total_events


def test_orphan_stack_frames_are_reported(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(" => schedule\n => do_idle\n")
    with pytest.raises(ParseError):
        ftrace_text.read(p)
    p.write_text(" bash-1 [000]   1.000001: sched_wake_idle_without_ipi: cpu=1\n => schedule\n")
    tr = tracekit.load(p)
    assert tr.unparsed_lines["line_no"].to_list() == [2]


def test_lost_events_marks(tmp_path):
    text = ("cpus=3\nversion = 6\nCPU 2 is empty\n"
            " bash-1 [000]   1.000001: sched_wake_idle_without_ipi: cpu=1\nCPU:1 [LOST 17 EVENTS]\n"
            "CPU:0 [EVENTS DROPPED]\n bash-1 [000]   1.000002: sched_wake_idle_without_ipi: cpu=1\n")
    p = tmp_path / "t.txt"
    p.write_text(text)
    tr = tracekit.load(p)
    assert tr.lost_events.to_dicts() == [{"cpu": 0, "lost": 0, "lost_unknown": 1},
                                         {"cpu": 1, "lost": 17, "lost_unknown": 0}]
    assert tr.lost_total == 18
    assert tr.unparsed_lines.height == 0
    assert (tr.metadata["cpus"], tr.metadata["version"], tr.metadata["empty_cpus"]) == (3, 6, [2])
    assert tr.events("sched_wake_idle_without_ipi")["cpu_"].to_list() == [1, 1]   # the field, renamed as in .dat


def test_unknown_event_keeps_its_text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(" bash-1 [000]   1.000001: my_probe: (foo+0x4/0x10) arg1=0x5\n")
    df = tracekit.load(p).events("my_probe")
    assert df["info"].to_list() == ["(foo+0x4/0x10) arg1=0x5"]


def test_formats_option(tmp_path):
    fmts = tracekit.load(SAME / "trace.dat").formats
    tr = tracekit.load(SAME / "report.txt.zst", formats=fmts)
    assert set(tr.formats) <= set(fmts)
    with pytest.raises(ConfigError):
        tracekit.load(SAME / "report.txt.zst", formats=tmp_path / "missing")


@pytest.mark.parametrize("content,expected", [
    (b"", "empty"),
    (b"\x00\x01\x02binary", "text"),
    (b"just some words\nand more\n", "text"),
])
def test_bad_inputs_raise_tracekit_errors(tmp_path, content, expected):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(TracekitError, match=expected):
        tracekit.load(p)


def test_binary_after_text_names_the_offset(tmp_path):
    good = (FORMS / "tgid.txt").read_bytes()
    p = tmp_path / "t.txt"
    p.write_bytes(good + b"\x00\x00junk")
    with pytest.raises(ParseError) as e:
        ftrace_text.read(p)
    assert e.value.offset == len(good)


def test_truncated_and_corrupt_compressed(tmp_path):
    z = (SAME / "trace.txt.zst").read_bytes()
    g = (SAME / "report_quoted.txt.gz").read_bytes()
    for name, data in (("cut.zst", z[: len(z) // 2]), ("cut.gz", g[: len(g) // 2]),
                       ("flip.zst", z[:100] + bytes([z[100] ^ 0xFF]) + z[101:])):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(TracekitError):
            ftrace_text.read(p)


def test_size_limit(tmp_path):
    with pytest.raises(ParseError, match="at most"):
        ftrace_text.read(SAME / "trace.txt.zst", max_bytes=10_000)


def test_cut_and_flipped_text_never_raises_anything_else(tmp_path):
    data = (FORMS / "tgid.txt").read_bytes()
    rng = random.Random(3)
    p = tmp_path / "t.txt"
    for i in range(40):
        cut = rng.randrange(len(data))
        if i % 2:
            b = bytearray(data)
            for _ in range(20):
                b[rng.randrange(len(b))] = rng.randrange(1, 256)
            variant = bytes(b[:cut])
        else:
            variant = data[:cut]
        p.write_bytes(variant)
        try:
            tr = ftrace_text.read(p)
        except TracekitError:
            continue
        assert tr.unparsed_lines is not None


def test_function_tracer_lines(tmp_path):
    """The function tracer's tracefs form (`func <-parent`, no event name). This kernel refuses the function tracer,
    so the lines are written here in the layout of kernel/trace/trace_output.c (trace_fn_trace)."""
    p = tmp_path / "fn.txt"
    p.write_text("# tracer: function\n"
                 "   CPU 0/KVM-4001    [000] d..1.   100.000001: kvm_pmu_deliver_pmi <-kvm_pmu_handle_event\n"
                 "   CPU 0/KVM-4001    [000] d..1.   100.000002: __mutex_lock.constprop.0 <-perf_event_ctx_lock_nested.isra.0\n")
    tr = tracekit.load(p)
    fn = tr.events("function")
    assert tr.metadata["tracer"] == "function" and tr.unparsed_lines.height == 0
    assert fn["ip_sym"].to_list() == ["kvm_pmu_deliver_pmi", "__mutex_lock.constprop.0"]
    assert fn["parent_ip_sym"].to_list() == ["kvm_pmu_handle_event", "perf_event_ctx_lock_nested.isra.0"]
    assert fn["common_comm"].to_list() == ["CPU 0/KVM"] * 2 and fn["ip"].null_count() == 2


@pytest.mark.parametrize("damage", ["pid", "ts"])
def test_digits_beyond_the_column_types_give_nulls_not_exceptions(tmp_path, damage):
    """A pid or timestamp with more digits than Int32/Int64 hold (a damaged paste): the line is kept, the field null."""
    line = " record_same_buf-5056  [001]3696155043934: sched_wakeup_new:     record_same_buf:5144 [120] CPU:000"
    bad = (line.replace("-5056 ", "-12345678901234567890123 ") if damage == "pid"
           else line.replace("3696155043934:", "123456789012345678901234567:"))
    text = "\n".join([line.replace("5144", "5143"), bad, line.replace("5144", "5145")]) + "\n"
    p = tmp_path / "t.txt"
    p.write_text(text)
    df = tracekit.load(p).events("sched_wakeup_new")
    assert df["pid"].to_list() == [5143, 5144, 5145]
    col = "common_pid" if damage == "pid" else "ts"
    assert df[col].null_count() == 1 and df[col][1] is None
