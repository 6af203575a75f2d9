"""The whole chain on a real file: a KVM scenario written as trace.dat (tracekit.testing writer) → the `tracekit
analyze` console command in a subprocess → report.html opened in headless Chromium, findings.json validated and
compared with the scenario's ground truth (known by construction)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import polars as pl
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "detectors"))  # kvm_gen: the detector tests' scenario generator

import kvm_gen  # noqa: E402
from _chromium import Chromium, chromium_path, file_url  # noqa: E402

from tracekit.analysis import schema  # noqa: E402

EVIL = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from tracekit.testing.formats_extra import kvm_formats
    from tracekit.testing.tracedat_writer import write_tracedat

    tmp = tmp_path_factory.mktemp("chain")
    sc = kvm_gen.build(3, windows=300, vcpus=3)
    fmts = kvm_formats()
    frames = {k: v for k, v in sc.trace.frames.items() if k in fmts}
    pids = sorted(set(frames["kvm:kvm_exit"]["common_pid"].to_list()))
    comms = {p: f"CPU {i}/KVM" for i, p in enumerate(pids)}
    comms[pids[0]] = EVIL
    kallsyms = {"_stext": 0xFFFFFFFF81000000, "kvm_pmu_deliver_pmi": kvm_gen.PMI_ADDR,
                "kvm_pmu_handle_event": kvm_gen.HANDLE_ADDR, "kvm_pmu_refresh": kvm_gen.HANDLE_ADDR + 0x800}
    dat = tmp / "kvm.dat"
    write_tracedat(dat, frames, fmts, cmdlines=comms, kallsyms=kallsyms)
    out = tmp / "report"
    proc = subprocess.run([sys.executable, "-c", "from tracekit.cli import main; main()", "analyze", str(dat),
                           "-o", str(out), "--fail-on", "error"], capture_output=True, text=True, timeout=600)
    truth = sc.truth.filter((pl.col("pmi_count") > 1) & ~pl.col("inconclusive"))
    return proc, out, truth


def test_exit_code_and_summary(chain):
    proc, out, truth = chain
    assert truth.height > 0
    assert proc.returncode == 1, proc.stderr  # error findings ≥ --fail-on error
    assert "multi-pmi-per-exit" in proc.stdout and "Traceback" not in proc.stderr


def test_findings_json_matches_truth(chain):
    _, out, truth = chain
    doc = json.loads((out / "findings.json").read_text())
    jsonschema.validate(doc, schema())
    got = {(r["pid"], r["exit_ts"], r["pmi_count"]) for r in doc["multi_pmi_exits"]}
    want = set(truth.select("pid", "exit_ts", "pmi_count").iter_rows())
    assert got == want
    assert doc["inputs"][0]["format"] == "trace.dat"


def test_evidence_is_rendered_event_text(chain):
    _, out, _ = chain
    html = (out / "report.html").read_text()
    assert "Event sequence of the worst flagged exits" in html
    assert "kvm_pmu_deliver_pmi &lt;-- kvm_pmu_handle_event" in html  # ftrace:function as trace-cmd prints it
    assert "<script" not in html


@pytest.mark.skipif(chromium_path() is None, reason="chromium not installed: apt-get install chromium")
def test_report_in_chromium(chain):
    _, out, truth = chain
    pngs = sorted(out.glob("*.png"))
    with Chromium() as browser:
        session = browser.open(file_url(out / "report.html"))
        facts = json.loads(browser.eval(session, """JSON.stringify({
            images: Array.from(document.images).map(i => i.complete && i.naturalWidth > 0),
            flagged: document.querySelectorAll('#flagged-exits tbody tr').length,
            scripts: document.scripts.length, pwned: window.__pwned === undefined ? null : window.__pwned,
            evil: document.body.innerText.includes('<script>window.__pwned=1</script>')})"""))
        problems = browser.problems()
    assert problems == []
    assert len(facts["images"]) == len(pngs) >= 4 and all(facts["images"])
    assert facts["flagged"] == min(truth.height, 200)
    assert facts["scripts"] == 0 and facts["pwned"] is None and facts["evil"]
