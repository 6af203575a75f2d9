"""Callchains as perf script prints them, computed once per distinct stack.

Samples repeat the same stacks, so :func:`distinct_stacks` groups them (a 64-bit hash per stack, then an exact
frame-by-frame check against the group's first stack) and :func:`strip_context` removes the ``PERF_CONTEXT_*``
markers of the distinct ones only. Both are a fixed number of numpy passes over the frames, whatever the depths.
"""

from __future__ import annotations

import numpy as np

from . import layout as L

KERNEL_START = np.uint64(0xFFFF800000000000)
CTX_KERNEL = np.uint64(2**64 - 128)
# PERF_CONTEXT_HV, KERNEL, USER, GUEST, GUEST_KERNEL, GUEST_USER
CONTEXTS = np.array([2**64 - 32, 2**64 - 128, 2**64 - 512, 2**64 - 2048, 2**64 - 2176, 2**64 - 2560],
                    dtype=np.uint64)
_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)


def mix(v: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        v = (v ^ (v >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        v = (v ^ (v >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return v ^ (v >> np.uint64(31))


def first_and_inverse(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(h, return_index=True, return_inverse=True)[1:]`` with one unstable sort (first occurrences are
    found by a reversed scatter, not a stable sort)."""
    if not len(h):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    perm = np.argsort(h)
    s = h[perm]
    new = np.empty(len(h), dtype=bool)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    rank = np.cumsum(new) - 1
    inv = np.empty(len(h), dtype=np.int64)
    inv[perm] = rank
    first = np.empty(int(rank[-1]) + 1, dtype=np.int64)
    first[inv[::-1]] = np.arange(len(h) - 1, -1, -1, dtype=np.int64)  # the last write per slot is the first row
    return first, inv


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])`` without the loop."""
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    return np.repeat(starts - (ends - counts), counts) + np.arange(total, dtype=np.int64)


def distinct_stacks(flat: np.ndarray, offs: np.ndarray, pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group equal stacks: ``(first, inv)``, the first sample of each distinct stack and each sample's group.

    Stack ``i`` is ``flat[offs[i]:offs[i + 1]]``; stacks holding user addresses are told apart by ``pid`` as
    well (kernel-only stacks are shared by all processes). Groups come from a 64-bit hash of each stack (sums of a
    mixed value per frame, plain and weighted by depth), and every sample is then compared frame by frame with its
    group's first: a sample whose stack differs (a hash collision) gets a group of its own.
    """
    n = len(offs) - 1
    cnt = np.diff(offs)
    nonempty = cnt > 0
    lo = offs[:-1][nonempty]
    has_user = np.zeros(n, dtype=bool)
    if len(flat):
        has_user[nonempty] = np.logical_or.reduceat(flat < KERNEL_START, lo)
    rowpid = np.where(has_user, np.asarray(pid).astype(np.int64), -1).astype(np.uint64)
    with np.errstate(over="ignore"):
        g = flat * _MIX2
        g ^= g >> np.uint64(29)
        cs = np.zeros(len(flat) + 1, dtype=np.uint64)
        np.cumsum(g, out=cs[1:])
        s1 = cs[offs[1:]] - cs[offs[:-1]]
        w = np.arange(len(flat), dtype=np.uint64)
        w *= g
        del g
        np.cumsum(w, out=cs[1:])
        del w
        # sum of g * depth = sum of g * global index - first index * sum of g
        s2 = cs[offs[1:]] - cs[offs[:-1]] - offs[:-1].astype(np.uint64) * s1
        h = mix(s1 ^ mix(s2 + _MIX1)) ^ mix(rowpid * _MIX1 + cnt.astype(np.uint64))
    del cs
    first, inv = first_and_inverse(h)
    rep = first[inv]
    bad = (cnt[rep] != cnt) | (rowpid[rep] != rowpid)
    check = np.flatnonzero((rep != np.arange(n)) & ~bad & nonempty)  # the group's first equals itself
    if len(check):
        c = cnt[check]
        mine = _ranges(offs[check], c)
        theirs = mine + np.repeat(offs[rep[check]] - offs[check], c)
        diff = np.flatnonzero(flat[mine] != flat[theirs])
        if len(diff):
            bad[check[np.searchsorted(np.cumsum(c), diff, side="right")]] = True
    if bad.any():
        own = np.flatnonzero(bad)
        inv[own] = len(first) + np.arange(len(own))
        first = np.concatenate([first, own])
    return first, inv


def strip_context(raw: np.ndarray, offs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Remove ``PERF_CONTEXT_*`` markers from callchains as perf script does.

    Args:
        raw: the stacks' words, markers included; stack ``i`` is ``raw[offs[i]:offs[i + 1]]``.

    Returns:
        (ips, counts, kernel, dropped): the remaining addresses, their count per stack, whether each is a kernel
        address (after ``PERF_CONTEXT_KERNEL``, or at or above the kernel start when no marker precedes it), and
        the stacks perf drops whole because they hold a marker-range value that is no ``PERF_CONTEXT_*`` it knows
        (their counts are 0).
    """
    n = len(offs) - 1
    cnt = np.diff(offs)
    marker = raw >= L.PERF_CONTEXT_MAX
    mpos = np.flatnonzero(marker)
    mval = raw[mpos]
    mstack = np.searchsorted(offs, mpos, side="right") - 1
    dropped = np.zeros(n, dtype=bool)
    dropped[mstack[~np.isin(mval, CONTEXTS)]] = True
    # the context in force: a run starts at every marker and at every stack's first frame
    run = marker.copy()
    run[offs[:-1][cnt > 0]] = True
    rpos = np.flatnonzero(run)
    rval = raw[rpos]
    kind = np.where(rval == CTX_KERNEL, 1, np.where(rval >= L.PERF_CONTEXT_MAX, 0, 2)).astype(np.int8)
    kind = np.repeat(kind, np.diff(np.append(rpos, len(raw))))
    keep = ~marker
    if dropped.any():
        keep &= ~np.repeat(dropped, cnt)
    ips = raw[keep]
    kind = kind[keep]
    kernel = (kind == 1) | ((kind == 2) & (ips >= KERNEL_START))
    counts = cnt - np.bincount(mstack, minlength=n)
    counts[dropped] = 0
    return ips, counts, kernel, dropped
