"""Symbols for perf samples the way ``perf script`` (perf 6.1) names them: kernel addresses through kallsyms, user
addresses through MMAP/MMAP2 maps and the ELF symbol tables of the mapped files (pyelftools), ``[unknown]`` else.

Resolution runs once per distinct (pid, address), so callchains that repeat cost nothing more.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from tracekit.symbols import Kallsyms

KERNEL_START = np.uint64(0xFFFF800000000000)
CTX_KERNEL = np.uint64(2**64 - 128)
CTX_USER = np.uint64(2**64 - 512)
UNKNOWN = "[unknown]"


def perf_kallsyms(ks: Kallsyms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kallsyms as perf loads it: text/data/bss symbols only; of several at one address the last one listed wins
    (perf gives the earlier ones zero length when it fixes up symbol ends, then prefers the one with a length)."""
    keep = np.isin(ks.types, np.array(list("TtWwDdBb"), dtype=object))
    addrs, names, mods = ks.addrs[keep], ks.names[keep], ks.modules[keep]
    last = np.append(addrs[1:] != addrs[:-1], True) if len(addrs) else np.zeros(0, dtype=bool)
    return addrs[last], names[last], mods[last]


_ELF64_SYM = np.dtype([("st_name", "<u4"), ("st_info", "u1"), ("st_other", "u1"), ("st_shndx", "<u2"),
                       ("st_value", "<u8"), ("st_size", "<u8")])
_STT_FUNC, _STT_GNU_IFUNC = 2, 10


def _symtab(elf, name: str):
    tab = elf.get_section_by_name(name)
    if tab is None or tab["sh_type"] == "SHT_NOBITS" or not tab["sh_size"]:
        return None
    return np.frombuffer(tab.data(), dtype=_ELF64_SYM).copy(), elf.get_section(tab["sh_link"]).data()


def _debug_file(elf) -> str | None:
    """``/usr/lib/debug/.build-id/xx/yyyy.debug`` of the file's GNU build id, when installed."""
    for sec in elf.iter_sections():
        if sec["sh_type"] != "SHT_NOTE":
            continue
        for note in sec.iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID":
                bid = note["n_desc"]
                path = f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug"
                return path if os.path.isfile(path) else None
    return None


class _Elf:
    """Function symbols of one ELF file (``.symtab``, else ``.dynsym``), addressed by file offset. pyelftools reads
    the section and segment headers; the symbol tables themselves are viewed as numpy arrays."""

    def __init__(self, path: str):
        self.ok = False
        try:
            from elftools.common.exceptions import ELFError
            from elftools.elf.elffile import ELFFile
        except ImportError:
            return
        try:
            with open(path, "rb") as f:
                elf = ELFFile(f)
                if elf.elfclass != 64 or not elf.little_endian:
                    return
                self.segs = [(s["p_offset"], s["p_filesz"], s["p_vaddr"]) for s in elf.iter_segments()
                             if s["p_type"] == "PT_LOAD"]
                found = _symtab(elf, ".symtab")
                debug = _debug_file(elf)
                if found is None and debug:  # perf reads the build-id debug file (e.g. libc6-dbg) first
                    with open(debug, "rb") as g:
                        found = _symtab(ELFFile(g), ".symtab")
                if found is None:
                    found = _symtab(elf, ".dynsym")
                if found is None:
                    return
                syms, strtab = found
        except (OSError, ELFError, ValueError, KeyError, IndexError):
            return
        kind = syms["st_info"] & 0xF
        syms = syms[((kind == _STT_FUNC) | (kind == _STT_GNU_IFUNC)) & (syms["st_value"] != 0)]
        syms = syms[np.argsort(syms["st_value"], kind="stable")]
        _, first = np.unique(syms["st_value"], return_index=True)
        syms = syms[first]
        sb = np.frombuffer(strtab, dtype=np.uint8)
        nul = np.flatnonzero(sb == 0)
        name_end = nul[np.minimum(np.searchsorted(nul, syms["st_name"]), len(nul) - 1)]
        self.names = np.array([strtab[a:e].decode("utf-8", "replace")
                               for a, e in zip(syms["st_name"].tolist(), name_end.tolist(), strict=True)],
                              dtype=object)
        self.starts = syms["st_value"].astype(np.uint64)
        sizes = syms["st_size"].astype(np.uint64)
        nxt = np.append(self.starts[1:], np.uint64(2**64 - 1))
        self.ends = np.where(sizes > 0, self.starts + sizes, nxt)
        self.ok = len(self.starts) > 0

    def lookup(self, file_off: np.ndarray) -> np.ndarray:
        out = np.full(len(file_off), None, dtype=object)
        if not self.ok:
            return out
        vaddr = np.full(len(file_off), np.uint64(0))
        found = np.zeros(len(file_off), dtype=bool)
        for off, size, va in self.segs:
            m = (file_off >= np.uint64(off)) & (file_off < np.uint64(off + size)) & ~found
            vaddr[m] = file_off[m] - np.uint64(off) + np.uint64(va)
            found |= m
        i = np.searchsorted(self.starts, vaddr, side="right") - 1
        hit = found & (i >= 0)
        safe = np.maximum(i, 0)
        hit &= vaddr < self.ends[safe]
        out[hit] = self.names[safe[hit]]
        return out


class Symbolizer:
    """Names addresses of one recording."""

    def __init__(self, kallsyms: Kallsyms | None, tables: dict[str, pl.DataFrame], symfs: str | None = None):
        self.k = perf_kallsyms(kallsyms) if kallsyms is not None and len(kallsyms) else None
        self.symfs = symfs
        self.maps = self._maps(tables)
        self._elf: dict[str, _Elf] = {}
        self.comm = tables.get("comm")
        self.fork = tables.get("fork")

    @staticmethod
    def _maps(tables) -> pl.DataFrame | None:
        parts = [tables[k].select(pl.col("pid").cast(pl.Int64), pl.col("addr"), pl.col("len"), pl.col("pgoff"),
                                  pl.col("filename"), pl.int_range(pl.len()).alias("seq"))
                 for k in ("mmap", "mmap2") if k in tables]
        if not parts:
            return None
        m = pl.concat(parts).filter(pl.col("pid") >= 0)
        return m.sort(["pid", "addr", "seq"])

    def _kernel(self, ips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(ips)
        if self.k is None:
            return np.full(n, UNKNOWN, dtype=object), np.full(n, UNKNOWN, dtype=object)
        addrs, names, mods = self.k
        i = np.searchsorted(addrs, ips, side="right") - 1
        ok = i >= 0
        safe = np.maximum(i, 0)
        sym = np.where(ok, names[safe], UNKNOWN)
        dso = np.where(ok, np.where(mods[safe] == "", "[kernel.kallsyms]", "[" + mods[safe].astype(str) + "]"),
                       UNKNOWN)
        return sym.astype(object), dso.astype(object)

    def _user(self, pids: np.ndarray, ips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(ips)
        sym = np.full(n, UNKNOWN, dtype=object)
        dso = np.full(n, UNKNOWN, dtype=object)
        if self.maps is None or not n or not self.maps.height:
            return sym, dso
        m = self.maps
        mpid = m["pid"].to_numpy()
        upids, first = np.unique(mpid, return_index=True)
        last = np.append(first[1:], len(mpid))
        mstart = m["addr"].to_numpy()
        mend = mstart + m["len"].to_numpy()
        pgoff = m["pgoff"].to_numpy()
        files = m["filename"].to_numpy()
        pidx = np.searchsorted(upids, pids)
        has = (pidx < len(upids)) & (upids[np.minimum(pidx, len(upids) - 1)] == pids)
        found = np.full(n, -1, dtype=np.int64)
        for k in np.unique(pidx[has]).tolist():  # one vectorised search per process with maps
            sel = np.nonzero(has & (pidx == k))[0]
            lo, hi = first[k], last[k]
            j = np.searchsorted(mstart[lo:hi], ips[sel], side="right") - 1 + lo
            okj = (j >= lo) & (ips[sel] < mend[np.maximum(j, lo)])
            found[sel[okj]] = j[okj]
        hit = found >= 0
        if not hit.any():
            return sym, dso
        j = found[hit]
        dso[hit] = files[j]
        off = ips[hit] - mstart[j] + pgoff[j]
        names = np.full(len(j), None, dtype=object)
        for f in np.unique(files[j]).tolist():
            sel = files[j] == f
            names[sel] = self._elf_for(f).lookup(off[sel])
        sym[np.nonzero(hit)[0]] = np.where(names == None, UNKNOWN, names)  # noqa: E711
        return sym, dso

    def _elf_for(self, filename: str) -> _Elf:
        e = self._elf.get(filename)
        if e is None:
            path = os.path.join(self.symfs, filename.lstrip("/")) if self.symfs else filename
            e = _Elf(path) if filename.startswith("/") and Path(path).is_file() else _Elf("/nonexistent")
            self._elf[filename] = e
        return e

    def resolve(self, pid: np.ndarray, ip: np.ndarray, kernel: np.ndarray) -> tuple[pl.Series, pl.Series]:
        """(sym, dso) of each address; ``kernel`` says which are kernel addresses."""
        key = pl.DataFrame({"pid": np.where(kernel, -1, pid).astype(np.int64), "ip": ip})
        uniq = key.unique()
        up, ui = uniq["pid"].to_numpy(), uniq["ip"].to_numpy()
        sym = np.empty(len(ui), dtype=object)
        dso = np.empty(len(ui), dtype=object)
        km = up < 0
        sym[km], dso[km] = self._kernel(ui[km])
        sym[~km], dso[~km] = self._user(up[~km], ui[~km])
        uniq = uniq.with_columns(pl.Series("sym", sym, dtype=pl.String), pl.Series("dso", dso, dtype=pl.String))
        out = key.join(uniq, on=["pid", "ip"], how="left", maintain_order="left")
        return out["sym"], out["dso"]

    # -- frames -----------------------------------------------------------------------------------------------
    def finish(self, parts: list[pl.DataFrame], cc_parts: list, tables) -> pl.DataFrame:
        """One event's sample frame from its decoded parts: symbols, callchains, comm; rows in time order."""
        df = pl.concat(parts, how="diagonal_relaxed")
        n = df.height
        pid = df["pid"].to_numpy() if "pid" in df.columns else np.full(n, -1, dtype=np.int32)
        ip = df["ip"].to_numpy()
        misc = df["misc"].to_numpy()
        kern = ((misc & 7) == 1) | (((misc & 7) == 0) & (ip >= KERNEL_START))
        sym, dso = self.resolve(pid, ip, kern)
        df = df.with_columns(sym.alias("sym"), dso.alias("dso"))
        if "_cc_part" in df.columns:
            flats, ctxs, counts = [], [], []
            for k in df["_cc_part"].unique(maintain_order=True).to_list():
                ips, ctx, offs = cc_parts[k]
                flats.append(ips)
                ctxs.append(ctx)
                counts.append(np.diff(offs))
            flat = np.concatenate(flats)
            ctx = np.concatenate(ctxs)
            cnt = np.concatenate(counts)
            row = np.repeat(np.arange(n, dtype=np.int64), cnt)
            fk = (ctx == CTX_KERNEL) | ((ctx == 0) & (flat >= KERNEL_START))
            fsym, _ = self.resolve(pid[row], flat, fk)
            lists = (pl.DataFrame({"row": row, "callchain": fsym, "callchain_ip": pl.Series(flat, dtype=pl.UInt64)})
                     .group_by("row", maintain_order=True).agg("callchain", "callchain_ip"))
            full = pl.DataFrame({"row": np.arange(n, dtype=np.int64)}).join(lists, on="row", how="left",
                                                                            maintain_order="left")
            df = df.with_columns(full["callchain"].fill_null([]), full["callchain_ip"].fill_null([]))
            df = df.drop("_cc_part", "_cc_n")
        else:
            df = df.with_columns(pl.lit([], dtype=pl.List(pl.String)).alias("callchain"),
                                 pl.lit([], dtype=pl.List(pl.UInt64)).alias("callchain_ip"))
        df = self._comm(df)
        lead = [c for c in ("ts", "cpu", "pid", "tid", "comm", "period", "ip", "sym", "dso", "callchain",
                            "callchain_ip") if c in df.columns]
        df = df.select(lead + [c for c in df.columns if c not in lead])
        return df.sort("ts", maintain_order=True) if "ts" in df.columns else df

    def _comm(self, df: pl.DataFrame) -> pl.DataFrame:
        if "tid" not in df.columns:
            return df.with_columns(pl.lit(None, dtype=pl.String).alias("comm"))
        c = self.comm
        if c is None or not c.height:
            comm = pl.lit(None, dtype=pl.String)
            return df.with_columns(pl.when(pl.col("pid") == 0).then(pl.lit("swapper")).otherwise(comm).alias("comm"))
        has_ts = "ts" in c.columns and "ts" in df.columns
        cc = c.select(pl.col("tid").cast(pl.Int32), (pl.col("ts") if has_ts else pl.lit(0)).cast(pl.Int64).alias(
            "_cts"), pl.col("comm")).sort("_cts", maintain_order=True)
        left = df.with_columns((pl.col("ts") if "ts" in df.columns else pl.lit(0)).cast(pl.Int64).alias("_cts"),
                               pl.int_range(pl.len()).alias("_row")).sort("_cts", maintain_order=True)
        j = left.join_asof(cc, on="_cts", by="tid", strategy="backward")
        # a thread with no COMM yet carries the comm its parent had when it forked (up the fork chain)
        if self.fork is not None and self.fork.height and j["comm"].null_count():
            fk = (self.fork.select(pl.col("tid").cast(pl.Int32), pl.col("ptid").cast(pl.Int32),
                                   pl.col("time").cast(pl.Int64).alias("_ftime")).unique("tid", keep="last"))
            anc = j.filter(pl.col("comm").is_null()).select("_row", pl.col("tid").alias("_anc"))
            found = []
            for _ in range(16):
                anc = anc.join(fk, left_on="_anc", right_on="tid", how="inner")
                if not anc.height:
                    break
                look = anc.select("_row", pl.col("ptid").alias("tid"), pl.col("_ftime").alias("_cts")).sort("_cts")
                got = look.join_asof(cc, on="_cts", by="tid", strategy="backward")
                found.append(got.filter(pl.col("comm").is_not_null()).select("_row", pl.col("comm").alias("_pc")))
                anc = got.filter(pl.col("comm").is_null()).select("_row", pl.col("tid").alias("_anc"))
            if found:
                j = (j.join(pl.concat(found).unique("_row"), on="_row", how="left")
                     .with_columns(pl.coalesce("comm", "_pc").alias("comm")).drop("_pc"))
        j = j.with_columns(pl.when(pl.col("comm").is_null() & (pl.col("pid") == 0)).then(pl.lit("swapper"))
                           .when(pl.col("comm").is_null()).then(pl.format(":{}", pl.col("tid")))
                           .otherwise(pl.col("comm")).alias("comm"))
        return j.sort("_row").drop("_row", "_cts")
