"""The HTML report: escaping, content, and the page as real headless Chromium loads it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for analysis_fixtures

from _chromium import Chromium, chromium_path, file_url  # noqa: E402
from analysis_fixtures import EVIL_COMM, FAKE_RULES, kvm_trace  # noqa: E402
from tracekit.reports.html import render_report  # noqa: E402

import tracekit  # noqa: E402
from tracekit.analysis import schema  # noqa: E402


@pytest.fixture(scope="module")
def evil_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evil")
    tracekit.analyze(kvm_trace(EVIL_COMM), rules=FAKE_RULES).save(out)
    return out


def test_markup_from_the_trace_is_escaped(evil_report):
    text = (evil_report / "report.html").read_text()
    assert "<script" not in text.lower()
    assert "onerror=" not in text.replace("onerror=&#34;", "")  # only as escaped text
    assert "&lt;script&gt;window.__pwned=1" in text


def test_report_is_self_contained(evil_report):
    text = (evil_report / "report.html").read_text()
    for bad in ("http://", "https://", "src=\"/", "<link rel=\"stylesheet\""):
        assert bad not in text, bad
    pngs = sorted(p.name for p in evil_report.glob("*.png"))
    assert pngs, "charts are also written beside the report"
    for name in pngs:
        assert f"{name}</code>" in text  # each embedded chart names its file
    assert text.count("data:image/png;base64,") == len(pngs)


def test_report_sections(evil_report):
    text = (evil_report / "report.html").read_text()
    for needle in ('id="flagged-exits"', "Trace summary", "Linux host 6.18.0", "Findings", "Rules",
                   "trace-cmd record -e lock:contention_begin -e lock:contention_end -T", "MSR_WRITE"):
        assert needle in text, needle
    # findings are ordered by severity: error before info
    assert text.index("sev-error") < text.index("sev-info")


def test_findings_json_validates(evil_report):
    doc = json.loads((evil_report / "findings.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.validate(doc, schema())
    assert doc["multi_pmi_exits"][0]["pmi_count"] == 3
    bad = dict(doc, multi_pmi_exits=[{"pid": 1}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema())


def test_render_report_escapes_image_names_and_values():
    a = tracekit.analyze(kvm_trace(), rules=FAKE_RULES)
    html = render_report(a, {"<b>x</b>": b"\x89PNG"})
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


# -- real browser -----------------------------------------------------------------------------------------------------
needs_chromium = pytest.mark.skipif(chromium_path() is None, reason="chromium not installed: apt-get install chromium")

_PAGE_FACTS = """JSON.stringify({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth})),
  flagged_rows: document.querySelectorAll('#flagged-exits tbody tr').length,
  scripts: document.scripts.length,
  pwned: window.__pwned === undefined ? null : window.__pwned,
  evil_text: document.body.innerText.includes('<script>window.__pwned=1'),
  title: document.title
})"""


@needs_chromium
def test_report_in_headless_chromium(evil_report):
    if chromium_path() is None:  # pragma: no cover - the marker skips first
        pytest.skip("chromium not installed")
    with Chromium() as browser:
        session = browser.open(file_url(evil_report / "report.html"))
        facts = json.loads(browser.eval(session, _PAGE_FACTS))
        problems = browser.problems()
    assert problems == [], problems
    assert facts["title"] == "tracekit report"
    assert facts["images"], "the report embeds its charts"
    for img in facts["images"]:
        assert img["complete"] and img["w"] > 0, img
    assert facts["flagged_rows"] == 1
    assert facts["scripts"] == 0 and facts["pwned"] is None
    assert facts["evil_text"], "the comm is shown as text"


@needs_chromium
def test_chromium_harness_sees_errors(tmp_path):
    """The harness must be able to fail: a page with a broken image and a script error is reported."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><img id=i src='data:image/png;base64,AAAA'>"
                    "<script>console.error('boom'); undefined_fn();</script></body></html>")
    with Chromium() as browser:
        session = browser.open(file_url(page))
        width = browser.eval(session, "document.getElementById('i').naturalWidth")
        problems = browser.problems()
    assert width == 0
    assert any("boom" in p for p in problems) and any("exception" in p for p in problems)


def test_hotspots_section_escapes_and_shows_paths(tmp_path):
    import polars as pl

    from tracekit.analysis import HOTSPOTS_SCHEMA
    from tracekit.detectors import RuleResult

    class Hot:
        name, defaults, record_hint = "mutex-hotspots", {}, ""

        def run(self, inputs, config):
            df = pl.DataFrame({"symbol": ["perf_event_ctx_lock*"], "share": [0.4707], "samples": [470],
                               "total_samples": [1000],
                               "by_thread": [[{"pid": 1, "tid": 2, "comm": EVIL_COMM, "share": 0.5, "samples": 3}]],
                               "top_paths": [[{"path": "perf_ioctl → perf_event_ctx_lock_nested.isra.0",
                                               "share": 0.4, "samples": 400}]],
                               "bursts": [[{"start_s": 1.0, "length_s": 1.9, "peak": 0.8}]], "period_s": [4.0]},
                              schema=HOTSPOTS_SCHEMA)
            return RuleResult(self.name, True, frames={"hotspots": df})

    a = tracekit.analyze(kvm_trace(), rules=[Hot])
    html = a.save(tmp_path)["html"].read_text()
    assert "47.07 % of the samples" in html and "perf_ioctl → perf_event_ctx_lock_nested.isra.0" in html
    assert "<td>40.0 %</td>" in html  # path share as a percentage
    assert "<script" not in html and "&lt;script&gt;" in html
    jsonschema.validate(json.loads((tmp_path / "findings.json").read_text()), schema())


def test_damage_is_counted_and_folded(tmp_path):
    tr = kvm_trace()
    tr.damage.extend(tracekit.ParseError("x.dat", 0x1000 * i, "a valid page", f"junk {i}") for i in range(8))
    html = tracekit.analyze(tr, rules=FAKE_RULES).save(tmp_path)["html"].read_text()
    assert "8 place(s) could not be read and were skipped" in html
    assert "x.dat @0x7000: expected a valid page, found junk 7" in html  # folded but present
    assert "<summary>3 more</summary>" in html
