"""tracekit.fleet: traces analysed as tasks on a local Dask cluster of worker processes give the same results as
tracekit.analyze on each trace on one machine; per-host rows are sums of per-trace rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import tracekit
from tracekit.errors import ConfigError

distributed = pytest.importorskip("distributed", reason="dask[distributed] not installed: pip install 'tracekit[fleet]'")

from tracekit.fleet import analyze_fleet  # noqa: E402
from tracekit.testing import build_kvm_scenario  # noqa: E402

DATA = Path(__file__).parent / "data"
_PER_TRACE = ("findings", "multi_pmi_exits", "inconclusive_exits", "exit_stats", "hotspots", "rules")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    paths = []
    for i in range(5):  # three hosts; seeds and double-PMI rates differ; host02 also has a contention trace
        p = root / f"host{i % 3:02d}" / f"t{i}.dat"
        p.parent.mkdir(exist_ok=True)
        build_kvm_scenario(40 + i, duration_s=0.01, double_pmi_rate=0.0 if i == 1 else 0.5).write(p)
        paths.append(p)
    p = root / "host02" / "contention.dat"
    shutil.copy(DATA / "hotspots" / "contention_cut.dat", p)
    paths.append(p)
    (root / "host01" / "broken.dat").write_bytes(b"\x17\x08\x44tracing6" + b"\x00" * 40)  # a truncated header
    out = root / "out"
    res = analyze_fleet(str(root / "host*" / "*.dat"), out, workers=2, host_from="parent")
    return root, paths, out, res


def test_fleet_equals_single_machine(fleet):
    root, paths, out, res = fleet
    assert res.workers >= 2
    by_path = {r["path"]: r for r in res.results}
    assert len(by_path) == len(paths) + 1
    for p in paths:
        got = by_path[str(p.absolute())]
        assert got["error"] is None, got["error"]
        want = tracekit.analyze(p).to_dict()
        for key in _PER_TRACE:  # rule notes name the input read: the dataset dir on the cluster
            mine = json.loads(json.dumps(got["analysis"][key]).replace(got["dataset"], str(p)))
            assert mine == want[key], (p.name, key)
        assert [i["events"] for i in got["analysis"]["inputs"]] == [i["events"] for i in want["inputs"]]
    assert any(len(r["analysis"]["multi_pmi_exits"]) for r in res.results if r["analysis"])


def test_fleet_rows(fleet):
    root, paths, out, res = fleet
    broken = res.traces.filter(~res.traces["ok"])
    assert broken["trace"].to_list() == [str((root / "host01" / "broken.dat").absolute())]
    assert "broken.dat" in broken["error"][0]
    ok = res.traces.filter(res.traces["ok"])
    for r in ok.iter_rows(named=True):
        want = tracekit.analyze(r["trace"])
        assert r["double_pmi_exits"] == want.multi_pmi_exits.height
        assert r["exits"] == want.exit_stats["count"].sum()
    for h in res.hosts.iter_rows(named=True):
        mine = res.traces.filter(res.traces["host"] == h["host"])
        assert h["traces"] == mine.height
        assert h["double_pmi_exits"] == mine["double_pmi_exits"].sum()
        assert h["double_pmi_rate"] == pytest.approx(mine["double_pmi_exits"].sum() / mine["exits"].sum())
    assert res.hosts.filter(res.hosts["host"] == "host02")["hotspot_share"][0] > 0
    sev = {"error": 3, "warning": 2, "info": 1, None: 0}
    ranks = [sev[s] for s in res.traces["max_severity"]]
    assert ranks == sorted(ranks, reverse=True)  # worst first
    doc = json.loads((out / "findings.json").read_text())
    assert len(doc["traces"]) == res.traces.height and len(doc["hosts"]) == 3
    html_text = (out / "report.html").read_text()
    assert "host02" in html_text and "<script" not in html_text
    assert (out / "datasets").is_dir() and tracekit.detect_format(next((out / "datasets").iterdir())) == "parquet"


def test_fleet_no_match(tmp_path):
    with pytest.raises(ConfigError, match="no input"):
        analyze_fleet(str(tmp_path / "nothing*" / "*.dat"), tmp_path / "out")
