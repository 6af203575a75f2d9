"""tracekit.stream.convert and the Parquet dataset reader: the dataset holds the same events, ts sorted in bounded
row groups, and the rules give the same results on it as on the original input."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from tracekit.parsers import parquet_dataset

import tracekit
from tracekit.errors import ConfigError, ParseError
from tracekit.stream import convert
from tracekit.testing import build_kvm_scenario

DATA = Path(__file__).parent / "data"
RESULTS = ("findings", "multi_pmi_exits", "inconclusive_exits", "exit_stats", "hotspots")


@pytest.fixture(scope="module")
def kvm_dat(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("kvm") / "kvm.dat"
    build_kvm_scenario(7, duration_s=0.03, double_pmi_rate=0.4).write(p, compression="zstd")
    return p


def _same_results(a, b) -> None:
    for attr in RESULTS:
        x, y = getattr(a, attr), getattr(b, attr)
        assert x.equals(y), f"{attr} differs:\n{x}\n{y}"


@pytest.mark.parametrize("src", ["kvm", DATA / "hotspots" / "contention_cut.dat"], ids=["kvm-scenario", "contention"])
def test_dataset_results_equal_in_memory(src, kvm_dat, tmp_path):
    path = kvm_dat if src == "kvm" else src
    out = convert(path, tmp_path / "ds")
    assert tracekit.detect_format(out) == "parquet"
    lazy = tracekit.load(out)
    assert lazy.format == "parquet" and lazy.metadata["source_format"] == "trace.dat"
    a, b = tracekit.analyze(path), tracekit.analyze(out)
    _same_results(a, b)
    assert a.multi_pmi_exits.height > 0 or a.hotspots["samples"].sum() > 0  # the comparison covers a finding


def test_events_equal_and_ts_sorted(kvm_dat, tmp_path):
    tr = tracekit.load(kvm_dat)
    out = convert(kvm_dat, tmp_path / "ds")
    ds = tracekit.load(out)
    assert sorted(ds.frames) == sorted(tr.frames)
    assert ds.counts().equals(tr.counts())
    assert ds.lost_events.equals(tr.lost_events)
    assert ds.lost_events.height > 0  # the scenario loses events: the table is really compared
    assert ds.tables.keys() == tr.tables.keys()
    for name, table in tr.tables.items():
        assert ds.tables[name].equals(table), name
    assert len(ds.kallsyms) == len(tr.kallsyms)
    for key in tr.frames:
        want = tr.events(key)
        got = ds.events(key)
        assert got.equals(want.sort("ts", maintain_order=True)), key
        assert got["ts"].is_sorted()
    assert ds.formats.keys() == {k for k, f in tr.formats.items() if f is not None and f.text}
    md = json.loads((out / "metadata.json").read_text())
    assert md["events"] == tr.total_events and md["first_ts"] == tr.time_range()[0]


def test_row_groups_bounded(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow not installed: row-group sizes not checked")
    import tracekit.stream as stream

    monkeypatch.setattr(stream, "ROW_GROUP", 500)
    p = tmp_path / "k.dat"
    build_kvm_scenario(3, duration_s=0.02).write(p)
    ds = tracekit.load(convert(p, tmp_path / "ds"))
    meta = pq.ParquetFile(ds.metadata["parquet_files"]["kvm:kvm_exit"]).metadata
    assert meta.num_row_groups > 1
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert max(sizes) <= 500 and sum(sizes) == ds.counts_hint["kvm:kvm_exit"]
    ts = [meta.row_group(i).column(0).statistics for i in range(meta.num_row_groups)]
    assert all(a.max <= b.min for a, b in zip(ts, ts[1:], strict=False))  # row groups in ts order


def test_scan_pushes_down_columns(kvm_dat, tmp_path):
    ds = tracekit.load(convert(kvm_dat, tmp_path / "ds"))
    lf = parquet_dataset.scan(ds, "kvm_exit")
    assert isinstance(lf, pl.LazyFrame)
    plan = lf.select("ts", "cpu").filter(pl.col("cpu") == 0).explain()
    assert "PROJECT 2/" in plan or "project: 2" in plan.lower(), plan
    got = lf.select("ts", "cpu").filter(pl.col("cpu") == 0).collect()
    assert not ds._cache  # scanning collected nothing into the trace
    assert got.height and got.equals(ds.events("kvm_exit").select("ts", "cpu").filter(pl.col("cpu") == 0))


def test_bad_datasets(kvm_dat, tmp_path):
    out = convert(kvm_dat, tmp_path / "ds")
    with pytest.raises(ConfigError):
        convert(kvm_dat, out)
    convert(kvm_dat, out, overwrite=True)
    (out / "tracekit.json").write_text('{"dataset_version": 99}')
    with pytest.raises(ParseError, match="dataset_version"):
        tracekit.load(out)
    (out / "tracekit.json").write_text("{not json")
    with pytest.raises(ParseError, match="JSON"):
        tracekit.load(out)
    (out / "tracekit.json").unlink()  # without the manifest: the files alone, by path
    plain = tracekit.load(out)
    assert plain.has("kvm:kvm_exit") and plain.events("kvm_exit")["ts"].is_sorted()
    victim = next(out.glob("kvm/kvm_exit.parquet"))
    victim.write_bytes(b"PAR1 broken")
    with pytest.raises(ParseError, match="kvm_exit"):
        tracekit.load(out).events("kvm_exit")


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_streamed_conversion_equals_in_memory(tmp_path, compression, monkeypatch):
    import tracekit.stream as stream

    monkeypatch.setattr(stream, "PART_ROWS", 700)  # several time windows per event
    p = tmp_path / "k.dat"
    build_kvm_scenario(11, duration_s=0.02, double_pmi_rate=0.5).write(p, compression=compression)
    out = convert(p, tmp_path / "ds", stream=True, batch_pages=4)  # many batches per CPU
    assert (out / "kvm" / "kvm_exit").is_dir() and len(list((out / "kvm" / "kvm_exit").glob("*.parquet"))) > 1
    assert not (out / "_runs").exists()
    tr, ds = tracekit.load(p), tracekit.load(out)
    assert sorted(ds.frames) == sorted(tr.frames) and ds.counts().equals(tr.counts())
    for key in tr.frames:
        assert ds.events(key).equals(tr.events(key)), key  # same rows, same order (ties: buffer, CPU, ring)
    assert ds.lost_events.equals(tr.lost_events) and ds.lost_total > 0
    assert ds.tables.keys() == tr.tables.keys()
    for name, table in tr.tables.items():  # lost_marks: prev_ts carried across batches of a CPU
        assert ds.tables[name].equals(table), name
    _same_results(tracekit.analyze(p), tracekit.analyze(out))


# columns of each event the lazy KVM rules (exit-stats, multi-pmi-per-exit) use; everything else is deleted from the
# dataset below, so a rule that read another column (or a whole event) would fail
_USED = {"kvm_exit": {"common_pid", "vcpu_id", "exit_reason", "isa"}, "kvm_entry": {"common_pid"},
         "kvm_apic_accept_irq": {"common_pid", "apicid", "vec", "dm"}, "kvm_apic_ipi": {"common_pid", "icr_low", "dest_id"},
         "kvm_inj_virq": {"common_pid", "vector", "soft", "reinjected"}, "kvm_apic": {"common_pid", "rw", "reg", "val"},
         "sched_switch": {"prev_pid", "next_pid"}, "sched_migrate_task": {"pid", "orig_cpu", "dest_cpu"},
         "function": {"common_pid", "ip"}, "kvm_pmu_deliver_pmi": {"common_pid"}, "kvm_inj_nmi": {"common_pid"}}


def _drop_unused(out: Path, used_by_event: dict[str, set[str]]) -> int:
    """Rewrite every event file of dataset ``out`` with only ``ts``, ``cpu`` and the columns ``used_by_event``
    names for it; returns how many columns were deleted."""
    man = json.loads((out / "tracekit.json").read_text())
    dropped = 0
    for key, name in man["events"].items():
        used = {"ts", "cpu"} | used_by_event.get(key.rsplit(":", 1)[-1], set())
        for f in [out / name] if (out / name).is_file() else sorted((out / name).glob("*.parquet")):
            df = pl.read_parquet(f)
            dropped += len(set(df.columns) - used)
            df.select([c for c in df.columns if c in used]).write_parquet(f)
    return dropped


def _run_rules(trace, names=("exit-stats", "multi-pmi-per-exit")) -> dict:
    from tracekit.detectors import Inputs, registry

    return {n: registry()[n]().run(Inputs(host=(trace,)), {}) for n in names}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_kvm_rules_read_only_their_columns(kvm_dat, tmp_path, stream):
    out = convert(kvm_dat, tmp_path / "ds", stream=stream, batch_pages=4)
    assert _drop_unused(out, _USED) > 50
    ds = tracekit.load(out)
    got, want = _run_rules(ds), _run_rules(tracekit.load(kvm_dat))
    assert not ds._cache  # no event was collected whole: only the scans' projected columns were read
    for name, res in want.items():
        assert res.ran and got[name].ran
        assert got[name].frames.keys() == res.frames.keys()
        for f, frame in res.frames.items():
            assert got[name].frames[f].equals(frame), (name, f)
        assert [x.summary for x in got[name].findings] == [x.summary for x in res.findings]
    assert want["multi-pmi-per-exit"].frames["flagged"].height > 0  # the comparison covers flagged exits


def test_exit_windows_plan_projects(kvm_dat, tmp_path):
    from tracekit.detectors.kvm_windows import exit_windows, exit_windows_plan

    ds = tracekit.load(convert(kvm_dat, tmp_path / "ds"))
    plan = exit_windows_plan(ds).explain()
    assert "PROJECT 6/15 COLUMNS" in plan and "PROJECT 3/11 COLUMNS" in plan, plan  # kvm_exit, kvm_entry
    assert exit_windows(ds).equals(exit_windows(tracekit.load(kvm_dat)))  # one plan: dataset and in memory agree


# columns the mutex-hotspots rule reads from lock contention events and their kernel stacks
_LOCK_USED = {"contention_begin": {"common_pid", "common_comm", "lock_addr", "flags"},
              "contention_end": {"common_pid", "lock_addr"}, "kernel_stack": {"common_pid", "caller", "callers"}}


def test_mutex_hotspots_reads_only_its_columns(tmp_path):
    """Real contention cut (tests/data/tracedat): every column mutex-hotspots does not use is deleted from the
    dataset; its frames and findings equal the in-memory run's, and no event is collected whole."""
    src = Path(__file__).parent / "data" / "tracedat" / "contention_v7_zstd.dat"
    out = convert(src, tmp_path / "ds")
    assert _drop_unused(out, _LOCK_USED) > 5
    ds = tracekit.load(out)
    got = _run_rules(ds, ("mutex-hotspots",))["mutex-hotspots"]
    want = _run_rules(tracekit.load(src), ("mutex-hotspots",))["mutex-hotspots"]
    assert not ds._cache
    assert want.ran and got.ran and got.frames.keys() == want.frames.keys()
    for f, frame in want.frames.items():
        assert got.frames[f].equals(frame), f
    assert [x.summary for x in got.findings] == [x.summary for x in want.findings]
    assert want.frames["waits"].height > 0
