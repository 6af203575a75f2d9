"""The four mutex-hotspot charts render to PNGs that decode and show something (not a blank canvas)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.image import imread
from tracekit.reports import hotspot_charts

from tracekit.detectors import Inputs, RuleResult
from tracekit.detectors.mutex_hotspots import MutexHotspots

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detectors"))
from test_mutex_hotspots import contention_trace, perf_trace, periodic_samples  # noqa: E402

NAMES = {"hotspot_heatmap", "hotspot_share", "hotspot_paths", "hotspot_waits"}


def _png(fig) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    data = buf.getvalue()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return imread(io.BytesIO(data), format="png")


@pytest.fixture(scope="module")
def result() -> RuleResult:
    df, _ = periodic_samples(2.0, 0.8, duration_s=10.0, seed=5)
    return MutexHotspots().run(Inputs(host=(perf_trace(df), contention_trace())), {})


def test_four_charts_render_to_non_empty_pngs(result):
    figs = hotspot_charts.figures(result)
    assert set(figs) == NAMES
    for name, fig in figs.items():
        img = _png(fig)
        assert img.shape[0] > 100 and img.shape[1] > 300, name
        rgb = img[..., :3].reshape(-1, 3)
        # more than background and text: the plotted data adds many colours
        assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 20, name
        assert fig.axes, name


def test_heatmap_rows_are_the_lock_threads(result):
    fig = hotspot_charts.heatmap(result)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(labels) == [f"CPU {i}/KVM-{1000 + i}" for i in range(4)]


def test_share_area_marks_the_bursts(result):
    fig = hotspot_charts.share_area(result)
    ax = fig.axes[0]
    n_bursts = result.frames["bursts"].filter(pl.col("source") == "perf").height
    assert n_bursts >= 4
    assert len(ax.patches) >= n_bursts  # one shaded span per burst
    assert "bursts every ~2.0 s" in ax.get_title()


def test_paths_and_waits_charts_read_their_frames(result):
    bars = hotspot_charts.top_paths(result).axes[0]
    assert len(bars.patches) == result.frames["top_paths"].filter(pl.col("source") == "perf").height
    hist = hotspot_charts.wait_histogram(result).axes[0]
    assert hist.get_xscale() == "log" and hist.get_yscale() == "log"


def test_perf_only_result_has_no_wait_histogram():
    df, _ = periodic_samples(2.0, 0.8, duration_s=4.0, seed=5)
    res = MutexHotspots().run(Inputs(host=(perf_trace(df),)), {})
    figs = hotspot_charts.figures(res)
    assert set(figs) == NAMES - {"hotspot_waits"}
    assert hotspot_charts.figures(RuleResult(rule="mutex-hotspots", ran=False)) == {}


def test_charts_follow_the_source_that_reaches_the_lock():
    df, _ = periodic_samples(2.0, 0.8, duration_s=2.0, seed=5)
    unnamed = df.with_columns(callchain=pl.lit(["[unknown]", "[unknown]"], dtype=pl.List(pl.String)))
    res = MutexHotspots().run(Inputs(host=(perf_trace(unnamed), contention_trace())), {"bucket_s": 1e-7})
    assert res.frames["hotspots"]["samples"][0] == 3  # the contention waits in the set, not 0 samples
    assert any("buckets; using" in n for n in res.notes)  # 2 s of samples in 100 ns buckets: widened
    fig = hotspot_charts.heatmap(res)
    assert "(contention)" in fig.axes[0].get_title()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["CPU 0/KVM-10", "CPU 1/KVM-11"]
