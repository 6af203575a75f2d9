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
    """Group equal hashes: ``(first, inv)``, the first index of each group and each index's group.

    One plain sort of the hashes with each index packed into their low bits (numpy's SIMD sort; its argsort has
    none): the packing drops that many low hash bits, so distinct hashes may share a group, which the caller's
    exact check undoes."""
    n = len(h)
    if not n:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    bits = np.uint64(max(1, (n - 1).bit_length()))
    low = np.uint64((1 << int(bits)) - 1)
    packed = h & ~low
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    perm = (packed & low).astype(np.int64)
    packed >>= bits
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(packed[1:], packed[:-1], out=new[1:])
    rank = np.cumsum(new) - 1
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = rank
    first = perm[new]  # equal keys are ordered by index: each group's first index comes first
    return first, inv


def distinct_stacks(flat: np.ndarray, offs: np.ndarray, pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group equal stacks: ``(first, inv)``, the first sample of each distinct stack and each sample's group.

    Stack ``i`` is ``flat[offs[i]:offs[i + 1]]``; stacks holding user addresses are told apart by ``pid`` as
    well (kernel-only stacks are shared by all processes). Groups come from a 64-bit hash of each stack (sums of a
    mixed value per frame, plain and weighted by distance to the stack's end), and every sample is then compared
    frame by frame with its group's first: a sample whose stack differs (a collision) gets a group of its own.
    """
    n = len(offs) - 1
    cnt = np.diff(offs)
    nonempty = cnt > 0
    has_user = np.zeros(n, dtype=bool)
    if len(flat):
        has_user[nonempty] = np.minimum.reduceat(flat, offs[:-1][nonempty]) < KERNEL_START
    rowpid = np.where(has_user, np.asarray(pid).astype(np.int64), -1).astype(np.uint64)
    lo, hi = offs[:-1], offs[1:]
    with np.errstate(over="ignore"):
        cs = np.empty(len(flat) + 1, dtype=np.uint64)
        cs[0] = 0
        g = cs[1:]
        np.multiply(flat, _MIX2, out=g)
        g ^= g >> np.uint64(29)
        np.cumsum(cs, out=cs)  # prefix sums P of the mixed frames
        p_lo = cs[lo]
        s1 = cs[hi] - p_lo
        np.cumsum(cs, out=cs)  # prefix sums Q of P: Q[hi] - Q[lo] - cnt * P[lo] = sum of g * (hi - index)
        s2 = cs[hi] - cs[lo] - cnt.astype(np.uint64) * p_lo
        h = mix(s1 ^ mix(s2 + _MIX1)) ^ mix(rowpid * _MIX1 + cnt.astype(np.uint64))
    del cs, g
    first, inv = first_and_inverse(h)
    rep = first[inv]
    bad = (cnt[rep] != cnt) | (rowpid[rep] != rowpid)
    if len(flat):  # every frame against the same frame of its group's first stack (which is itself for a first)
        theirs = np.repeat(np.where(bad, 0, offs[:-1][rep] - offs[:-1]), cnt)
        theirs += np.arange(len(flat), dtype=np.int64)
        diff = np.flatnonzero(flat[theirs] != flat)
        if len(diff):
            bad[np.searchsorted(offs, diff, side="right") - 1] = True
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
