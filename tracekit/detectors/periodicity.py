"""Bursts and their period in an evenly bucketed share series (used by the ``mutex-hotspots`` rule).

A *burst* is a run of consecutive buckets whose share is at or above a threshold. The *period* between bursts is
estimated two ways and the more trustworthy one is kept:

* from burst onsets, when there are at least three bursts and their spacing is regular (coefficient of variation of
  the onset-to-onset intervals below 0.25): ``(last onset - first onset) / (bursts - 1)``, which averages the
  one-bucket quantisation of each onset away;
* otherwise from the autocorrelation of the series: the highest local maximum after the first zero crossing, refined
  with a parabola through its neighbours.

The confidence (0..1) is the autocorrelation at the chosen lag times the regularity of the onsets (1 - CV) when
onsets are used. Everything is numpy over the whole series; no per-bucket Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

__all__ = ["BURSTS_SCHEMA", "Periodicity", "find_bursts", "estimate_period", "describe"]

BURSTS_SCHEMA = {"start_s": pl.Float64, "length_s": pl.Float64, "peak": pl.Float64, "mean": pl.Float64,
                 "first_bucket": pl.Int64, "buckets": pl.Int64}
"""One row per burst: start (s from the series origin), length (s), peak and mean share in the burst, first bucket
index and number of buckets."""

_REGULAR_CV = 0.25


@dataclass(frozen=True)
class Periodicity:
    """The period between bursts.

    Attributes:
        period_s: estimated period in seconds, or None when the series shows none.
        confidence: 0..1 (autocorrelation at the period, times the onsets' regularity when onsets were used).
        method: ``onsets``, ``autocorrelation`` or ``none``.
        bursts: number of bursts seen.
        mean_burst_s: mean burst length in seconds (None without bursts).
        text: the result in words, e.g. ``bursts every ~4.0 s lasting ~1.9 s``.
    """

    period_s: float | None
    confidence: float
    method: str
    bursts: int
    mean_burst_s: float | None
    text: str


def find_bursts(share: np.ndarray, bucket_s: float, threshold: float, origin_s: float = 0.0,
                bridge: int = 1) -> pl.DataFrame:
    """Runs of consecutive buckets with ``share >= threshold``.

    Args:
        share: share per bucket (0..1), buckets contiguous from ``origin_s``.
        bucket_s: bucket length in seconds.
        threshold: the share a bucket needs to be part of a burst.
        origin_s: time of bucket 0.
        bridge: a dip of at most this many buckets between two hot buckets does not end a burst (a noisy bucket
            inside a burst is not two bursts).

    Returns:
        A frame with :data:`BURSTS_SCHEMA`, bursts in time order.
    """
    x = np.nan_to_num(np.asarray(share, dtype=np.float64))
    hot = x >= threshold
    if bridge > 0 and hot.any():
        # fill cold runs of <= bridge buckets that have hot buckets on both sides
        e = np.diff(np.concatenate(([0], (~hot).astype(np.int8), [0])))
        c0, c1 = np.flatnonzero(e == 1), np.flatnonzero(e == -1)
        inner = (c0 > 0) & (c1 < len(x)) & (c1 - c0 <= bridge)
        fill = np.zeros(len(x) + 1, dtype=np.int64)
        np.add.at(fill, c0[inner], 1)
        np.add.at(fill, c1[inner], -1)
        hot |= np.cumsum(fill[:-1]) > 0
    if not hot.any():
        return pl.DataFrame(schema=BURSTS_SCHEMA)
    edges = np.diff(np.concatenate(([0], hot.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    csum = np.concatenate(([0.0], np.cumsum(x)))
    # reduceat over [start, next start) would run past a burst's end; mask the cold buckets away first
    peaks = np.maximum.reduceat(np.where(hot, x, -np.inf), starts)
    n = ends - starts
    return pl.DataFrame({
        "start_s": origin_s + starts * bucket_s,
        "length_s": n * bucket_s,
        "peak": peaks,
        "mean": (csum[ends] - csum[starts]) / n,
        "first_bucket": starts.astype(np.int64),
        "buckets": n.astype(np.int64),
    }, schema=BURSTS_SCHEMA)


def _acf(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    n = len(x)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(x, size)
    ac = np.fft.irfft(f * np.conjugate(f), size)[:n]
    if ac[0] <= 0:
        return np.zeros(n)
    # unbiased: each lag averages n - lag products
    return (ac / ac[0]) * (n / np.maximum(n - np.arange(n), 1))


def _acf_peak(x: np.ndarray) -> tuple[float | None, float]:
    """Lag (in buckets, sub-bucket) and height of the autocorrelation's dominant peak after its first zero."""
    n = len(x)
    if n < 6 or np.allclose(x, x[0]):
        return None, 0.0
    ac = _acf(x)
    limit = max(3, (2 * n) // 3)  # lags beyond 2/3 of the series rest on too few products
    below = np.flatnonzero(ac[1:limit] <= 0)
    if not len(below):
        return None, 0.0
    lo = below[0] + 1
    seg = ac[lo:limit]
    if len(seg) < 3:
        return None, 0.0
    inner = seg[1:-1]
    is_max = (inner >= seg[:-2]) & (inner >= seg[2:]) & (inner > 0)
    cand = np.flatnonzero(is_max) + 1
    if not len(cand):
        return None, 0.0
    # the first local maximum that reaches 80% of the highest one: avoids picking 2x the period
    top = seg[cand].max()
    k = cand[np.flatnonzero(seg[cand] >= 0.8 * top)[0]]
    y0, y1, y2 = seg[k - 1], seg[k], seg[k + 1]
    den = y0 - 2 * y1 + y2
    frac = 0.5 * (y0 - y2) / den if den != 0 else 0.0
    return float(lo + k + np.clip(frac, -0.5, 0.5)), float(np.clip(y1, 0.0, 1.0))


def estimate_period(share: np.ndarray, bucket_s: float, bursts: pl.DataFrame,
                    min_confidence: float = 0.3) -> Periodicity:
    """Estimate the period between bursts of ``share`` (see the module docstring).

    A period no longer than the mean burst, or with a confidence below ``min_confidence``, is no period.

    Args:
        share: share per bucket.
        bucket_s: bucket length in seconds.
        bursts: what :func:`find_bursts` returned for the same series.
        min_confidence: the confidence a period needs to be reported.

    Returns:
        A :class:`Periodicity`.
    """
    x = np.nan_to_num(np.asarray(share, dtype=np.float64))
    nb = bursts.height
    mean_len = float(bursts["length_s"].mean()) if nb else None
    lag, height = _acf_peak(x)
    period = None
    method = "none"
    conf = 0.0
    if nb >= 3:
        onsets = bursts["first_bucket"].to_numpy().astype(np.float64)
        gaps = np.diff(onsets)
        cv = float(gaps.std() / gaps.mean()) if gaps.mean() > 0 else 1.0
        if cv < _REGULAR_CV:
            period = (onsets[-1] - onsets[0]) / (nb - 1) * bucket_s
            method = "onsets"
            acf_at = _acf(x)[int(round(period / bucket_s))] if int(round(period / bucket_s)) < len(x) else 0.0
            conf = float(np.clip(acf_at, 0.0, 1.0) * (1.0 - cv))
    if period is None and lag is not None and nb >= 2:
        period = lag * bucket_s
        method = "autocorrelation"
        conf = height
    if period is not None and (conf < min_confidence or (mean_len is not None and period <= mean_len)):
        period, method = None, "none"
    period = None if period is None else float(period)
    return Periodicity(period, round(conf, 3), method, nb, mean_len, describe(period, mean_len, nb))


def describe(period_s: float | None, mean_burst_s: float | None, bursts: int) -> str:
    """The periodicity in words: ``bursts every ~4.0 s lasting ~1.9 s``."""
    if not bursts:
        return "no bursts"
    lasting = f"lasting ~{mean_burst_s:.1f} s" if mean_burst_s is not None else ""
    if period_s is None:
        word = "burst" if bursts == 1 else "bursts"
        return f"{bursts} {word} {lasting}, no regular period".replace("  ", " ")
    return f"bursts every ~{period_s:.1f} s {lasting}".strip()
