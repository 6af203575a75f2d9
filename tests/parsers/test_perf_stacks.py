"""Stack grouping and context stripping of the perf.data reader (parsers/perf_data/stacks.py)."""

from __future__ import annotations

import numpy as np
import pytest
from tracekit.parsers.perf_data import stacks as S

K = 0xFFFFFFFF81000000
CTX_KERNEL, CTX_USER = 2**64 - 128, 2**64 - 512


def _flat(stacks: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offs = np.zeros(len(stacks) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in stacks], out=offs[1:])
    flat = np.array([v for s in stacks for v in s], dtype=np.uint64)
    return flat, offs


def _key(stack: list[int], pid: int) -> tuple:
    return (tuple(stack), pid if any(v < 0xFFFF800000000000 for v in stack) else -1)


def _check_groups(stacks, pids, first, inv, minimal: bool) -> None:
    keys = [_key(s, p) for s, p in zip(stacks, pids, strict=True)]
    for i, g in enumerate(inv.tolist()):  # every sample is in the group of a sample with the very same stack
        assert keys[int(first[g])] == keys[i]
    assert len(set(inv.tolist())) == len(first)
    if minimal:
        assert len(first) == len(set(keys))


def _random_stacks(rng, n: int) -> tuple[list[list[int]], list[int]]:
    base = [[CTX_KERNEL] + [K + int(x) for x in rng.integers(0, 50, rng.integers(0, 6))]
            + ([CTX_USER] + [0x400000 + int(x) for x in rng.integers(0, 5, rng.integers(1, 3))]
               if rng.random() < 0.5 else []) for _ in range(40)]
    stacks, pids = [], []
    for _ in range(n):
        s = list(base[int(rng.integers(0, len(base)))])
        if rng.random() < 0.1:
            s = s[::-1]  # same frames, another order
        stacks.append(s)
        pids.append(int(rng.integers(1, 4)))
    stacks.append([])
    pids.append(7)
    return stacks, pids


def test_distinct_stacks_groups_equal_stacks_and_tells_processes_apart_by_user_frames():
    rng = np.random.default_rng(1)
    stacks, pids = _random_stacks(rng, 3000)
    flat, offs = _flat(stacks)
    first, inv = S.distinct_stacks(flat, offs, np.array(pids))
    _check_groups(stacks, pids, first, inv, minimal=True)
    assert (first[inv[first]] == first).all()


def test_distinct_stacks_splits_hash_collisions(monkeypatch):
    rng = np.random.default_rng(2)
    stacks, pids = _random_stacks(rng, 500)
    flat, offs = _flat(stacks)
    monkeypatch.setattr(S, "mix", lambda v: np.zeros_like(v))  # every stack of one depth collides
    first, inv = S.distinct_stacks(flat, offs, np.array(pids))
    _check_groups(stacks, pids, first, inv, minimal=False)


def test_first_and_inverse_packs_the_index_into_the_low_bits():
    h = np.array([5 << 40, 3, 5 << 40, 2**64 - 1, 3, (5 << 40) | 1], dtype=np.uint64)
    first, inv = S.first_and_inverse(h)
    assert inv[0] == inv[2] and inv[1] == inv[4] and inv[3] not in (inv[0], inv[1])
    assert inv[5] == inv[0]  # differs from h[0] only in the dropped low bits: the caller's exact check splits them
    assert sorted(first.tolist()) == [0, 1, 3]


@pytest.mark.parametrize("n", [0, 1])
def test_small_inputs(n):
    stacks = [[K]] * n
    flat, offs = _flat(stacks)
    first, inv = S.distinct_stacks(flat, offs, np.zeros(n, dtype=np.int64))
    assert len(first) == n and len(inv) == n


def test_strip_context_drops_markers_and_tells_kernel_frames():
    stacks = [[CTX_KERNEL, K + 1, K + 2, CTX_USER, 0x401000], [0x402000, K + 3], [], [CTX_KERNEL, 2**64 - 7, K]]
    flat, offs = _flat(stacks)
    ips, counts, kernel, dropped = S.strip_context(flat, offs)
    assert counts.tolist() == [3, 2, 0, 0]
    assert ips.tolist() == [K + 1, K + 2, 0x401000, 0x402000, K + 3]
    assert kernel.tolist() == [True, True, False, False, True]  # no marker: by address
    assert dropped.tolist() == [False, False, False, True]  # an unknown marker-range value: perf drops the chain
