"""The command line: through typer's runner (hand-made rules and traces) and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import polars as pl
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from analysis_fixtures import EVIL_COMM, FAKE_RULES, kvm_trace  # noqa: E402

import tracekit  # noqa: E402
import tracekit.api  # noqa: E402
import tracekit.cli  # noqa: E402
import tracekit.detectors  # noqa: E402
from tracekit.analysis import schema  # noqa: E402
from tracekit.cli import app  # noqa: E402

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Registry = the hand-made rules; any path named *.dat under tmp_path loads as the hand-made KVM trace."""
    monkeypatch.setattr(tracekit.detectors, "registry", lambda: {r.name: r for r in FAKE_RULES})
    real_load = tracekit.api.load

    def load(path, **kw):
        if Path(path).suffix == ".dat" and Path(path).exists():
            return kvm_trace(EVIL_COMM)
        return real_load(path, **kw)

    monkeypatch.setattr(tracekit.api, "load", load)
    monkeypatch.setattr(tracekit.cli, "load", load)
    trace = tmp_path / "hand.dat"
    trace.write_bytes(b"stand-in")
    return trace


def test_analyze_writes_report(fake, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["analyze", str(fake), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "multi-pmi-per-exit" in res.output and "VM-exit(s) got more than one PMI" in res.output
    assert "mutex-hotspots did not run" in res.output
    assert {"report.html", "findings.json", "pmi_histogram.png"} <= {p.name for p in out.iterdir()}
    jsonschema.validate(json.loads((out / "findings.json").read_text()), schema())


@pytest.mark.parametrize("fail_on, code", [("error", 1), ("warning", 1), ("info", 1)])
def test_fail_on(fake, tmp_path, fail_on, code):
    res = runner.invoke(app, ["analyze", str(fake), "-o", str(tmp_path / "o"), "--fail-on", fail_on])
    assert res.exit_code == code, res.output


def test_fail_on_below_threshold(fake, tmp_path):
    res = runner.invoke(app, ["analyze", str(fake), "-o", str(tmp_path / "o"), "--only", "exit-stats",
                              "--fail-on", "warning"])
    assert res.exit_code == 0, res.output  # only an info finding


def test_json_only_and_rules_file(fake, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text("[rules.multi-pmi-per-exit]\nmin_pmis = 9\n")
    out = tmp_path / "j"
    res = runner.invoke(app, ["analyze", str(fake), "-o", str(out), "--json-only", "--rules", str(rules),
                              "--fail-on", "error"])
    assert res.exit_code == 0, res.output
    assert [p.name for p in out.iterdir()] == ["findings.json"]
    assert json.loads((out / "findings.json").read_text())["multi_pmi_exits"] == []


@pytest.mark.parametrize("args, words", [
    (["analyze", "MISSING", "--fail-on", "fatal"], "--fail-on must be one of"),
    (["analyze", "MISSING"], "expected an existing file"),
    (["analyze", "HAND", "--only", "nope"], "unknown rule(s) nope"),
    (["analyze", "HAND", "--rules", "RULES"], "unknown rule 'nope'"),
])
def test_bad_input_exits_2_with_one_line(fake, tmp_path, args, words):
    rules = tmp_path / "bad.toml"
    rules.write_text("[rules.nope]\n")
    args = [str(fake) if a == "HAND" else str(rules) if a == "RULES" else str(tmp_path / "m.dat") if a == "MISSING"
            else a for a in args]
    res = runner.invoke(app, [*args, "-o", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert words in res.output
    assert "Traceback" not in res.output


def test_default_input_is_the_bundled_sample(fake, monkeypatch, tmp_path):
    monkeypatch.setattr(tracekit.cli, "bundled_sample", lambda: fake)
    res = runner.invoke(app, ["analyze", "-o", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "d" / "findings.json").read_text())
    assert doc["inputs"][0]["path"] == "hand-made.dat"


def test_bundled_sample_path():
    try:
        p = tracekit.cli.bundled_sample()
    except tracekit.ConfigError as exc:
        pytest.skip(f"bundled sample not present yet: {exc}")
    assert p.name == "kvm-double-pmi.dat" and p.is_file()


def test_detectors_lists_real_rules():
    res = runner.invoke(app, ["detectors"])
    assert res.exit_code == 0, res.output
    for name in tracekit.detectors.registry():
        assert name[:12] in res.output


def test_convert(fake, tmp_path):
    out = tmp_path / "pq"
    res = runner.invoke(app, ["convert", str(fake), "-o", str(out)])
    assert res.exit_code == 0, res.output
    exits = pl.read_parquet(out / "kvm" / "kvm_exit.parquet")
    assert exits.equals(kvm_trace(EVIL_COMM).events("kvm_exit").sort("ts", maintain_order=True))  # files are ts sorted
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["events"] == 20
    assert tracekit.detect_format(out) == "parquet"


# -- as a subprocess: the installed console script's contract ------------------------------------------------------
def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run([sys.executable, "-c", "from tracekit.cli import main; main()", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"garbage that is no trace\n" * 3])
def test_subprocess_bad_input(tmp_path, content):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(content)
    p = _run("analyze", str(bad), "-o", str(tmp_path / "o"), cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("tracekit: error: ") and "bad.dat" in p.stderr


def test_subprocess_usage_error(tmp_path):
    p = _run("analyze", "--no-such-flag", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    p = _run("--version", cwd=tmp_path)
    assert p.returncode == 0 and tracekit.__version__ in p.stdout


def test_subprocess_analyze_bundled_sample(tmp_path):
    try:
        tracekit.cli.bundled_sample()
    except tracekit.ConfigError as exc:
        pytest.skip(f"bundled sample not present yet: {exc}")
    p = _run("analyze", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "tracekit-report"
    assert (out / "report.html").is_file() and (out / "findings.json").is_file()
    doc = json.loads((out / "findings.json").read_text())
    jsonschema.validate(doc, schema())
    assert doc["multi_pmi_exits"], "the sample holds double-PMI exits"
    p = _run("analyze", "--fail-on", "error", "--json-only", "-o", str(tmp_path / "x"), cwd=tmp_path)
    assert p.returncode == 1, p.stderr


def test_shell_completion_script(tmp_path):
    p = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'tracekit'; from tracekit.cli import main; "
                        "main()", "--show-completion", "bash"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "complete" in p.stdout and "_TRACEKIT_COMPLETE" in p.stdout.upper()


DATA = Path(__file__).resolve().parent / "data"


def test_real_host_trace_and_guest_perf(tmp_path):
    """A real trace.dat cut (lock contention) on the host side, a real perf.data as guest input: the hotspot rule runs,
    the KVM rules say what to record, the guest input is listed as such."""
    host = DATA / "hotspots" / "contention_cut.dat"
    guest = DATA / "perf" / "host-contention.perf.data"
    if not host.is_file() or not guest.is_file():
        pytest.skip("real data cuts not present in tests/data")
    out = tmp_path / "r"
    res = runner.invoke(app, ["analyze", str(host), "--guest", str(guest), "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "findings.json").read_text())
    jsonschema.validate(doc, schema())
    assert [(i["side"], i["format"]) for i in doc["inputs"]] == [("host", "trace.dat"), ("guest", "perf.data")]
    ran = {r["rule"]: r for r in doc["rules"]}
    assert ran["mutex-hotspots"]["ran"]
    assert not ran["multi-pmi-per-exit"]["ran"] and "kvm_exit" in " ".join(ran["multi-pmi-per-exit"]["missing"])
    assert "trace-cmd record" in ran["multi-pmi-per-exit"]["record_hint"]
    html = (out / "report.html").read_text()
    assert "What to record for the rules that could not run" in html and "kprobe_events" in html


def test_analyze_lists_the_flagged_exits_of_the_sample(tmp_path):
    """The terminal lists the first flagged exits of the bundled sample: those the generator's truth file names."""
    sample = tracekit.cli.bundled_sample()
    truth = json.loads(sample.with_name("kvm-double-pmi.truth.json").read_text())["flagged"]
    res = runner.invoke(app, ["analyze", str(sample), "-o", str(tmp_path / "r"), "--json-only"],
                        env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert f"VM-exits with more than one PMI ({len(truth)})" in res.output
    listed = [line.split() for line in res.output.splitlines() if line.strip()[:1].isdigit()
              and len(line.split()) >= 7 and "." in line.split()[0]]
    first = sorted(truth, key=lambda r: r["exit_ts"])[:tracekit.cli._LISTED_EXITS]
    assert [(f"{r['exit_ts'] / 1e9:.6f}", str(r["pid"]), str(r["vcpu"]), r["exit_reason"], str(r["pmi_count"]))
            for r in first] == [(w[0], w[1], w[2], w[4], w[6]) for w in listed]
    assert f"and {len(truth) - len(first)} more" in res.output
