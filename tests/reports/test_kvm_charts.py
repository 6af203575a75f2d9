"""KVM charts: drawn from the rules' frames with the object API, decodable PNGs, nothing drawn from empty frames."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis_fixtures import windows_frame  # noqa: E402
from tracekit.reports import kvm_charts  # noqa: E402
from tracekit.reports.html import figure_png  # noqa: E402


def _pixels(fig) -> np.ndarray:
    return mpimg.imread(io.BytesIO(figure_png(fig)), format="png")


def test_each_chart_draws_and_decodes():
    w = windows_frame()
    msr = pl.DataFrame({"ts": [0, 10_000_000, 2_000_000_000], "pid": [1, 1, 2], "vcpu": [0, 0, 1],
                        "msr": [0x38F, 0xC1, 0x38F], "msr_name": ["IA32_PERF_GLOBAL_CTRL", "IA32_PMC0", None],
                        "value": [1, 2, 3]})
    figs = {
        "hist": kvm_charts.pmi_histogram(w),
        "timeline": kvm_charts.flagged_timeline(w.filter(pl.col("pmi_count") > 1),
                                                w.head(2).with_columns(pl.lit(True).alias("inconclusive")), w),
        "reasons": kvm_charts.exit_reasons(None, w),
        "times": kvm_charts.handling_times(w),
        "msr": kvm_charts.msr_activity(msr),
    }
    for name, fig in figs.items():
        assert fig is not None, name
        px = _pixels(fig)
        assert px.shape[0] > 100 and px.shape[1] > 400, name
        assert px[..., :3].std() > 0.01, f"{name} is blank"


def test_empty_frames_draw_nothing():
    empty = windows_frame().clear()
    assert kvm_charts.pmi_histogram(empty) is None
    assert kvm_charts.flagged_timeline(empty, empty, empty) is None
    assert kvm_charts.exit_reasons(None, empty) is None
    assert kvm_charts.handling_times(empty) is None
    assert kvm_charts.msr_activity(None) is None
    assert kvm_charts.figures({}) == {}


def test_histogram_counts_conclusive_windows_only():
    w = windows_frame().with_columns(pl.Series("inconclusive", [True] + [False] * 7))
    fig = kvm_charts.pmi_histogram(w)
    ax = fig.axes[0]
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == [1, 1, 5]  # pmi_count 0: 6 windows - 1 inconclusive; 1: one; 3: one
    assert "1 inconclusive" in ax.get_title()


def test_no_pyplot_state():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    kvm_charts.pmi_histogram(windows_frame())
    assert plt.get_fignums() == before


def test_nice_buckets():
    assert kvm_charts._nice_bucket(2.0) == 0.05
    assert kvm_charts._nice_bucket(60.0) == 1.0
    assert kvm_charts._nice_bucket(600.0) == 10.0
