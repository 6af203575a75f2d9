"""Trace.render() against trace-cmd's own text (tests/golden/render, made by tests/golden/regen_render.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
import zstandard
from polars.testing import assert_frame_equal

import tracekit

from .golden import read_golden

DATA = Path(__file__).resolve().parents[1] / "data"
CASES = [
    ("tracedat/contention_v7_zstd.dat", "tracedat__contention_v7_zstd.N.txt.zst"),
    ("tracedat/contention_v6.dat.zst", "tracedat__contention_v6.N.txt.zst"),
    ("tracedat/multi_buffer.dat", "tracedat__multi_buffer.N.txt.zst"),
    ("text/same_buffer/trace.dat", "same_buffer__trace.N.txt.zst"),
    ("printfmt/kvm_vmx.dat", "printfmt__kvm_vmx.N.txt.zst"),
    ("printfmt/kvm_svm.dat", "printfmt__kvm_svm.N.txt.zst"),
    ("printfmt/all_formats.dat", "printfmt__all_formats.N.txt.zst"),
]
KEY = ["ts", "cpu", "common_pid", "event", "info"]


def _load(rel: str, tmp_path: Path) -> tracekit.Trace:
    path = DATA / rel
    if path.suffix == ".zst":
        out = tmp_path / path.stem
        out.write_bytes(zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read())
        path = out
    return tracekit.load(path)


@pytest.mark.parametrize(("rel", "golden"), CASES, ids=[c[0] for c in CASES])
def test_render_equals_trace_cmd(rel: str, golden: str, tmp_path: Path) -> None:
    want = read_golden(golden).sort(KEY)
    got = _load(rel, tmp_path).render()
    assert got.columns[:6] == ["ts", "cpu", "common_pid", "common_comm", "event", "info"]
    assert got.height == want.height
    assert_frame_equal(got.select(KEY).sort(KEY), want)


def test_render_is_in_trace_order(tmp_path: Path) -> None:
    got = _load("tracedat/contention_v7_zstd.dat", tmp_path).render()
    assert got["ts"].is_sorted()
    want = read_golden("tracedat__contention_v7_zstd.N.txt.zst")
    # same events in the same order wherever timestamps differ
    assert got.filter(pl.col("ts").is_unique())["event"].to_list() == \
        want.filter(pl.col("ts").is_unique())["event"].to_list()


def test_kvm_exit_both_isa_branches_named(tmp_path: Path) -> None:
    for isa, names in (("vmx", {"MSR_WRITE", "APIC_WRITE"}), ("svm", {"msr", "npf"})):
        tr = _load(f"printfmt/kvm_{isa}.dat", tmp_path)
        ex = tr.events("kvm_exit", symbolic=True)
        got = set(ex["exit_reason_name"].to_list())
        assert names <= got, (isa, got)
        assert not any(n.startswith("0x") for n in got)
        info = tr.render().filter(pl.col("event") == "kvm_exit")["info"]
        assert info.str.contains(r"^vcpu \d+ reason (" + "|".join(sorted(got)) + ") rip 0x").all()


@pytest.mark.skipif(shutil.which("trace-cmd") is None, reason="trace-cmd not installed: live oracle skipped")
def test_live_trace_cmd_matches_golden() -> None:
    """The committed golden is what this trace-cmd prints (the goldens are not stale)."""
    out = subprocess.run(["trace-cmd", "report", "-t", "-N", str(DATA / "tracedat/multi_buffer.dat")],
                         capture_output=True, check=True).stdout
    golden = Path(__file__).resolve().parents[1] / "golden/render/tracedat__multi_buffer.N.txt.zst"
    assert zstandard.ZstdDecompressor().stream_reader(golden.open("rb")).read() == out
