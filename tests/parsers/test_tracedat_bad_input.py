"""trace.dat reader on damaged real files: only TracekitError (naming file, offset, expectation), never another
exception or a hang; a corrupt page costs only that page."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import numpy as np
import pytest
import zstandard
from tracekit.parsers.tracedat.sections import read_info

import tracekit
from tracekit.errors import ParseError, TracekitError, UnsupportedFormatError

DATA = Path(__file__).resolve().parents[1] / "data" / "tracedat"


@pytest.fixture(scope="module")
def zstd_bytes() -> bytes:
    return (DATA / "contention_v7_zstd.dat").read_bytes()


@pytest.fixture(scope="module")
def v6_bytes() -> bytes:
    return zstandard.ZstdDecompressor().decompress((DATA / "contention_v6.dat.zst").read_bytes(),
                                                   max_output_size=64 << 20)


def load_bytes(tmp_path: Path, data: bytes, name: str = "x.dat"):
    p = tmp_path / name
    p.write_bytes(data)
    return tracekit.load(p), p


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def survive(tmp_path: Path, data: bytes, what: str) -> str:
    """Load ``data``: returns 'ok' or 'error' (a TracekitError naming the file); anything else fails the test."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        tr, _ = load_bytes(tmp_path, data)
        for name in tr.event_names:
            tr.events(name)
        return "ok"
    except TracekitError as exc:
        assert "x.dat" in str(exc), (what, str(exc))
        return "error"
    except _Hang:
        pytest.fail(f"{what}: no result within 60 s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_wrong_magic_unknown_version_unknown_compression(tmp_path, zstd_bytes):
    with pytest.raises(UnsupportedFormatError, match=r"magic"):
        from tracekit.parsers import tracedat
        tracedat.read(tmp_path / "m.dat") if (tmp_path / "m.dat").write_bytes(b"\x17\x08\x45tracing7\0" + b"\0" * 64) \
            else None
    with pytest.raises(UnsupportedFormatError, match=r"version '9'.*expected 6 or 7"):
        load_bytes(tmp_path, zstd_bytes[:10] + b"9" + zstd_bytes[11:])
    i = zstd_bytes.index(b"zstd\0")
    with pytest.raises(UnsupportedFormatError, match=r"unknown compression 'lzma'") as e:
        load_bytes(tmp_path, zstd_bytes[:i] + b"lzma" + zstd_bytes[i + 4:])
    assert f"@{i + 5:#x}" in str(e.value) or "@0x" in str(e.value)


def test_empty_and_tiny_files(tmp_path):
    for data in (b"", b"\x17", b"\x17\x08\x44tracing", b"\x17\x08\x44tracing7\0\0\x08"):
        with pytest.raises(TracekitError):
            load_bytes(tmp_path, data)


def test_truncations_name_file_offset_and_expectation(tmp_path, zstd_bytes):
    n = len(zstd_bytes)
    outcomes = []
    for cut in sorted({12, 20, 30, 60, 300, 2000, 50_000, n // 3, n // 2, n - 70_000, n - 5000, n - 100, n - 1}):
        try:
            load_bytes(tmp_path, zstd_bytes[:cut])
            outcomes.append("ok")
        except ParseError as exc:
            assert exc.path.endswith("x.dat") and exc.expected, exc
            assert "@0x" in str(exc) or exc.offset is None
            outcomes.append("error")
    assert outcomes.count("error") >= len(outcomes) - 2


def _page_offsets(path: Path) -> list[int]:
    info = read_info(path.read_bytes(), str(path))
    top = info.buffers[0]
    return [c.offset + k * info.page_size for c in top.cpus for k in range(c.size // info.page_size)]


def test_corrupt_page_costs_only_that_page(tmp_path, v6_bytes):
    full, p = load_bytes(tmp_path, v6_bytes, "full.dat")
    pages = _page_offsets(p)
    assert len(pages) > 100
    bad = bytearray(v6_bytes)
    victim = pages[len(pages) // 2]
    bad[victim + 8:victim + 16] = (0x7FFFFF).to_bytes(8, "little")  # commit far beyond the page
    other = pages[len(pages) // 3]
    bad[other + 16:other + 24] = (0).to_bytes(4, "little") + (3).to_bytes(4, "little")  # type_len 0, length 3
    tr, _ = load_bytes(tmp_path, bytes(bad))
    assert len(tr.damage) == 2
    offsets = sorted(d.offset for d in tr.damage)
    assert offsets == sorted([victim, other])
    assert all("x.dat" in str(d) and "page" in d.expected for d in tr.damage)
    lost_rows = full.total_events - tr.total_events
    assert 0 < lost_rows <= 2 * 4096 // 8
    for name in ("sched_switch", "contention_begin"):
        if full.has(name):
            a, b = full.events(name), tr.events(name)
            assert b.height <= a.height and b.join(a, on=b.columns, how="anti").is_empty()


def test_flipped_bytes_never_escape_as_other_exceptions(tmp_path, zstd_bytes, v6_bytes):
    rnd = random.Random(2)
    results = []
    for data, regions in ((zstd_bytes, 8), (v6_bytes, 8)):
        n = len(data)
        starts = [rnd.randrange(0, 4096) for _ in range(regions // 2)] + \
                 [rnd.randrange(0, n) for _ in range(regions)] + [n - rnd.randrange(1, 200_000) for _ in range(6)]
        for pos in starts:
            b = bytearray(data)
            width = rnd.choice((1, 4, 8, 64))
            b[pos:pos + width] = bytes(x ^ rnd.randrange(1, 256) for x in b[pos:pos + width])
            results.append(survive(tmp_path, bytes(b), f"flip@{pos}+{width}"))
    assert "error" in results and "ok" in results


def test_huge_sizes_do_not_allocate(tmp_path, zstd_bytes):
    info = read_info(zstd_bytes, "x")
    first = info.buffers[0].cpus[0].offset
    b = bytearray(zstd_bytes)
    b[first + 4:first + 8] = (0xFFFFFFF0).to_bytes(4, "little")  # the first chunk claims 4 GiB compressed
    assert survive(tmp_path, bytes(b), "huge chunk") in ("ok", "error")
    tr, _ = load_bytes(tmp_path, bytes(b))
    assert tr.damage and np.all([isinstance(d, ParseError) for d in tr.damage])
