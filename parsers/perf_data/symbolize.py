"""Symbols for perf samples the way ``perf script`` (perf 6.1) names them: kernel addresses through kallsyms, user
addresses through MMAP/MMAP2 maps and the ELF symbol tables of the mapped files (pyelftools), ``[unknown]`` else.

Resolution runs once per distinct (pid, address), so callchains that repeat cost nothing more.
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl

from tracekit.symbols import Kallsyms

from .stacks import KERNEL_START, distinct_stacks, strip_context

UNKNOWN = "[unknown]"
_USER_BITS = np.uint64(47)
_USER_LIMIT = np.uint64(1 << 47)
_USER_MASK = np.uint64((1 << 47) - 1)


def _factorize_small(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(v, return_inverse=True)`` for integers of a small range (pids), by a table instead of a sort."""
    if not len(v):
        return v[:0], np.zeros(0, dtype=np.int64)
    lo, hi = int(v.min()), int(v.max())
    if hi - lo >= 1 << 24:
        return np.unique(v, return_inverse=True)
    present = np.zeros(hi - lo + 1, dtype=bool)
    present[v - lo] = True
    rank = np.cumsum(present) - 1
    return np.nonzero(present)[0].astype(v.dtype) + lo, rank[v - lo]


def perf_kallsyms(ks: Kallsyms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kallsyms as perf loads it: text/data/bss symbols only; of several at one address the last one listed wins
    (perf gives the earlier ones zero length when it fixes up symbol ends, then prefers the one with a length)."""
    keep = np.isin(ks.types.astype("U1"), np.array(list("TtWwDdBb")))
    addrs, names, mods = ks.addrs[keep], ks.names[keep], ks.modules[keep]
    last = np.append(addrs[1:] != addrs[:-1], True) if len(addrs) else np.zeros(0, dtype=bool)
    return addrs[last], names[last], mods[last]


_ELF64_SYM = np.dtype([("st_name", "<u4"), ("st_info", "u1"), ("st_other", "u1"), ("st_shndx", "<u2"),
                       ("st_value", "<u8"), ("st_size", "<u8")])
_ELF64_PHDR = np.dtype([("p_type", "<u4"), ("p_flags", "<u4"), ("p_offset", "<u8"), ("p_vaddr", "<u8"),
                        ("p_paddr", "<u8"), ("p_filesz", "<u8"), ("p_memsz", "<u8"), ("p_align", "<u8")])
_PT_LOAD = 1
_STT_FUNC, _STT_GNU_IFUNC = 2, 10


def _symtab(elf, name: str):
    tab = elf.get_section_by_name(name)
    if tab is None or tab["sh_type"] == "SHT_NOBITS" or not tab["sh_size"]:
        return None
    return np.frombuffer(tab.data(), dtype=_ELF64_SYM).copy(), elf.get_section(tab["sh_link"]).data()


_ELF64_SHDR = np.dtype([("sh_name", "<u4"), ("sh_type", "<u4"), ("sh_flags", "<u8"), ("sh_addr", "<u8"),
                        ("sh_offset", "<u8"), ("sh_size", "<u8"), ("sh_link", "<u4"), ("sh_info", "<u4"),
                        ("sh_addralign", "<u8"), ("sh_entsize", "<u8")])
_SHT_SYMTAB, _SHT_NOTE, _SHT_DYNSYM = 2, 7, 11
_NT_GNU_BUILD_ID = 3


class _Elf64:
    """Just enough of a 64-bit little-endian ELF file, read through numpy views: program and section headers,
    section contents by name, the GNU build id. Other ELF kinds go through pyelftools."""

    def __init__(self, f):
        self.f = f
        h = f.read(64)
        if len(h) < 64 or h[:4] != b"\x7fELF" or h[4] != 2 or h[5] != 1:
            raise ValueError("not a 64-bit little-endian ELF")
        phoff, shoff = (int.from_bytes(h[o:o + 8], "little") for o in (0x20, 0x28))
        phnum, shnum, shstrndx = (int.from_bytes(h[o:o + 2], "little") for o in (0x38, 0x3C, 0x3E))
        self.ph = self._array(phoff, phnum, _ELF64_PHDR)
        self.sh = self._array(shoff, shnum, _ELF64_SHDR)
        names = self.data(int(shstrndx)) if shstrndx < len(self.sh) else b""
        self.names = {names[n:names.find(b"\0", n)].decode("latin-1"): i
                      for i, n in enumerate(self.sh["sh_name"].tolist())}

    def _array(self, off: int, n: int, dt: np.dtype) -> np.ndarray:
        self.f.seek(off)
        raw = self.f.read(n * dt.itemsize)
        return np.frombuffer(raw[: len(raw) // dt.itemsize * dt.itemsize], dtype=dt)

    def data(self, i: int) -> bytes:
        s = self.sh[i]
        if s["sh_type"] == 8:  # SHT_NOBITS
            return b""
        self.f.seek(int(s["sh_offset"]))
        return self.f.read(int(s["sh_size"]))

    def symtab(self, name: str):
        i = self.names.get(name)
        if i is None or self.sh[i]["sh_type"] not in (_SHT_SYMTAB, _SHT_DYNSYM):
            return None
        raw = self.data(i)
        if not raw:
            return None
        syms = np.frombuffer(raw[: len(raw) // _ELF64_SYM.itemsize * _ELF64_SYM.itemsize], dtype=_ELF64_SYM)
        return syms.copy(), self.data(int(self.sh[i]["sh_link"]))

    def build_id(self) -> str | None:
        i = self.names.get(".note.gnu.build-id")
        if i is None:
            return None
        d = self.data(i)
        pos = 0
        while pos + 12 <= len(d):
            namesz, descsz, typ = (int.from_bytes(d[pos + k:pos + k + 4], "little") for k in (0, 4, 8))
            name_end = pos + 12 + (namesz + 3) // 4 * 4
            if typ == _NT_GNU_BUILD_ID:
                return d[name_end:name_end + descsz].hex()
            pos = name_end + (descsz + 3) // 4 * 4
        return None


class _Elf:
    """Function symbols of one ELF file (``.symtab``, else that of its build-id debug file, else ``.dynsym``),
    addressed by file offset. 64-bit little-endian files are read with numpy views (:class:`_Elf64`), others
    with pyelftools."""

    def __init__(self, path: str):
        self.ok = False
        found = None
        try:
            with open(path, "rb") as f:
                e = _Elf64(f)
                ph = e.ph[e.ph["p_type"] == _PT_LOAD]
                self.segs = list(zip(ph["p_offset"].tolist(), ph["p_filesz"].tolist(), ph["p_vaddr"].tolist(),
                                     strict=True))
                found = e.symtab(".symtab")
                if found is None:  # perf reads the build-id debug file (e.g. libc6-dbg) next
                    bid = e.build_id()
                    debug = f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug" if bid else None
                    if debug and os.path.isfile(debug):
                        with open(debug, "rb") as g:
                            found = _Elf64(g).symtab(".symtab")
                if found is None:
                    found = e.symtab(".dynsym")
        except ValueError:
            found = self._pyelftools(path)
        except (OSError, IndexError, KeyError):
            return
        if found is None:
            return
        syms, strtab = found
        kind = syms["st_info"] & 0xF
        syms = syms[((kind == _STT_FUNC) | (kind == _STT_GNU_IFUNC)) & (syms["st_value"] != 0)]
        syms = syms[np.argsort(syms["st_value"], kind="stable")]
        _, first = np.unique(syms["st_value"], return_index=True)
        syms = syms[first]
        self._strtab = strtab
        self._name_off = syms["st_name"].astype(np.int64)
        self._names: dict[int, str] = {}
        self.starts = syms["st_value"].astype(np.uint64)
        sizes = syms["st_size"].astype(np.uint64)
        nxt = np.append(self.starts[1:], np.uint64(2**64 - 1))
        self.ends = np.where(sizes > 0, self.starts + sizes, nxt)
        self.ok = len(self.starts) > 0

    def _pyelftools(self, path: str):
        try:
            from elftools.common.exceptions import ELFError
            from elftools.elf.elffile import ELFFile
        except ImportError:
            return None
        try:
            with open(path, "rb") as f:
                elf = ELFFile(f)
                if elf.elfclass != 64 or not elf.little_endian:
                    return None  # the symbol views below are Elf64 little-endian
                self.segs = [(s["p_offset"], s["p_filesz"], s["p_vaddr"]) for s in elf.iter_segments()
                             if s["p_type"] == "PT_LOAD"]
                return _symtab(elf, ".symtab") or _symtab(elf, ".dynsym")
        except (OSError, ELFError, ValueError, KeyError, IndexError):
            return None

    def lookup(self, file_off: np.ndarray) -> np.ndarray:
        """Function names at file offsets (``[unknown]`` where none covers the address)."""
        out = np.full(len(file_off), UNKNOWN, dtype=object)
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
        idx = safe[hit]
        uniq, inv = np.unique(idx, return_inverse=True)
        names = np.array([self._name(int(i)) for i in uniq] + [""], dtype=object)[:-1]
        out[hit] = names[inv]
        return out

    def _name(self, i: int) -> str:
        """Symbol ``i``'s name, decoded from the string table on first use."""
        name = self._names.get(i)
        if name is None:
            a = int(self._name_off[i])
            e = self._strtab.find(b"\0", a)
            name = self._strtab[a:e if e >= 0 else len(self._strtab)].decode("utf-8", "replace")
            self._names[i] = name
        return name


_NO_ELF = _Elf("")
_ELF_CACHE: dict[tuple, _Elf] = {}


def _elf_cached(path: str) -> _Elf:
    """The symbols of ``path``, parsed once per process for one (size, mtime) of the file."""
    try:
        st = os.stat(path)
    except OSError:
        return _NO_ELF
    key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
    e = _ELF_CACHE.get(key)
    if e is None:
        if len(_ELF_CACHE) > 4096:
            _ELF_CACHE.clear()
        e = _ELF_CACHE[key] = _Elf(path)
    return e


def clear_caches() -> None:
    """Forget parsed ELF symbol tables (benchmarks use it to time a cold read)."""
    _ELF_CACHE.clear()


def _inherit_maps(m: pl.DataFrame, fork: pl.DataFrame) -> pl.DataFrame:
    """A forked process starts with its parent's maps as they were at the fork, as perf's thread model clones them
    (PERF_RECORD_FORK with pid != ppid; no MMAP records follow for the inherited ones). Inherited rows keep their
    ``seq``, so the child's own later maps at the same address win; forks of forks inherit in turn."""
    kids = (fork.filter(pl.col("pid") != pl.col("ppid"))
            .select(pl.col("pid").cast(pl.Int64).alias("child"), pl.col("ppid").cast(pl.Int64).alias("parent"),
                    pl.col("time").cast(pl.Int64).alias("ftime"))
            .unique("child", keep="first"))
    if not kids.height:
        return m
    frontier = m
    for _ in range(64):  # one generation per round
        got = (kids.join(frontier, left_on="parent", right_on="pid", how="inner")
               .filter(pl.col("ts") <= pl.col("ftime"))
               .select(pl.col("child").alias("pid"), *[c for c in m.columns if c != "pid"]))
        got = got.join(m.select("pid", "src", "seq"), on=["pid", "src", "seq"], how="anti")
        if not got.height:
            break
        m = pl.concat([m, got.select(m.columns)])
        frontier = got
    return m


def _take(df: pl.DataFrame, order: np.ndarray) -> pl.DataFrame:
    """``df[order]``, numeric columns without nulls gathered by numpy (its large arrays get huge pages, and Polars
    takes them without a copy), the others by Polars."""
    cols = []
    for c in df.get_columns():
        if c.dtype.is_numeric() and not c.has_nulls():
            cols.append(pl.Series(c.name, c.to_numpy()[order], dtype=c.dtype))
        else:
            cols.append(c.gather(order))
    return pl.DataFrame(cols)


class Symbolizer:
    """Names addresses of one recording."""

    def __init__(self, kallsyms: Kallsyms | None, tables: dict[str, pl.DataFrame], symfs: str | None = None):
        self.k = perf_kallsyms(kallsyms) if kallsyms is not None and len(kallsyms) else None
        self.symfs = symfs
        self.maps = self._maps(tables)
        self._elf: dict[str, _Elf] = {}
        self._ktable: tuple[np.ndarray, np.ndarray] | None = None
        self._classes: tuple[np.ndarray, np.ndarray] | None = None
        self.comm = tables.get("comm")
        self.invalid_callchains = 0
        self.fork = tables.get("fork")

    @staticmethod
    def _maps(tables) -> pl.DataFrame | None:
        parts = [tables[k].select(pl.col("pid").cast(pl.Int64), pl.col("addr"), pl.col("len"), pl.col("pgoff"),
                                  pl.col("filename"), pl.int_range(pl.len()).alias("seq"), pl.lit(src).alias("src"),
                                  (pl.col("ts") if "ts" in tables[k].columns else pl.lit(0)).cast(pl.Int64).alias("ts"))
                 for src, k in enumerate(("mmap", "mmap2")) if k in tables]
        if not parts:
            return None
        m = pl.concat(parts).filter(pl.col("pid") >= 0)
        fork = tables.get("fork")
        if fork is not None and fork.height and m.height:
            m = _inherit_maps(m, fork)
        return m.drop("ts", "src").sort(["pid", "addr", "seq"])

    def _pid_classes(self, pid: np.ndarray) -> np.ndarray:
        """Each pid replaced by the smallest pid whose maps are the same rows (its user addresses name the same), or
        by -2 when it has none: stacks and addresses are then named once per class of processes, not per process
        (the workers forked by one program share its maps)."""
        if self._classes is None:
            self._classes = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            if self.maps is not None and self.maps.height:
                rows = self.maps.group_by("pid", maintain_order=True).agg("addr", "len", "pgoff", "filename")
                cls = (rows.group_by("addr", "len", "pgoff", "filename")
                       .agg(pl.col("pid"), pl.col("pid").min().alias("rep")).select("pid", "rep")
                       .explode("pid").sort("pid"))
                self._classes = cls["pid"].to_numpy().astype(np.int64), cls["rep"].to_numpy().astype(np.int64)
                # addresses are looked up under their class's pid only: the other processes' rows are not needed
                self.maps = self.maps.filter(pl.col("pid").is_in(cls["rep"].unique().implode()))
        pids, reps = self._classes
        pid = np.asarray(pid, dtype=np.int64)
        if not len(pids):
            return np.full(len(pid), -2, dtype=np.int64)
        j = np.minimum(np.searchsorted(pids, pid), len(pids) - 1)
        return np.where(pids[j] == pid, reps[j], -2)

    def _kernel_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(sym, dso) of every kallsyms symbol, then of ``[unknown]`` (the code of addresses below the first)."""
        if self._ktable is None:
            if self.k is None:
                self._ktable = np.array([UNKNOWN], dtype=object), np.array([UNKNOWN], dtype=object)
            else:
                _, names, mods = self.k
                dso = np.full(len(names) + 1, "[kernel.kallsyms]", dtype=object)
                dso[-1] = UNKNOWN
                in_mod = np.nonzero(mods != "")[0]
                dso[in_mod] = "[" + mods[in_mod].astype(object) + "]"
                self._ktable = np.append(names, UNKNOWN).astype(object), dso
        return self._ktable

    def _kernel(self, ips: np.ndarray) -> np.ndarray:
        """Codes into :meth:`_kernel_table` of kernel addresses: the symbol at or before each, straight from one
        binary search per address (a distinct-address pass would cost more: addresses repeat across stacks but
        sorting them costs more than searching the table)."""
        if self.k is None:
            return np.zeros(len(ips), dtype=np.int64)
        addrs = self.k[0]
        i = np.searchsorted(addrs, ips, side="right") - 1
        i[i < 0] = len(addrs)
        return i

    def _user(self, pids: np.ndarray, ips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(ips)
        sym = np.full(n, UNKNOWN, dtype=object)
        dso = np.full(n, UNKNOWN, dtype=object)
        if self.maps is None or not n or not self.maps.height:
            return sym, dso
        self._pid_classes(np.zeros(0, dtype=np.int64))  # (keeps only the maps of each class's pid)
        m = self.maps
        mpid = m["pid"].to_numpy()
        mstart = m["addr"].to_numpy().astype(np.uint64)
        mend = mstart + m["len"].to_numpy().astype(np.uint64)
        pgoff = m["pgoff"].to_numpy().astype(np.uint64)
        files = m["filename"].to_numpy()
        upids, mrank = np.unique(mpid, return_inverse=True)
        # one sorted key per map: (process rank, start); user addresses fit in 47 bits
        mkey = (mrank.astype(np.uint64) << _USER_BITS) | (mstart & _USER_MASK)
        order = np.argsort(mkey, kind="stable")
        mkey, mstart, mend, pgoff, files = mkey[order], mstart[order], mend[order], pgoff[order], files[order]
        qrank = np.searchsorted(upids, pids)
        has = (qrank < len(upids)) & (upids[np.minimum(qrank, len(upids) - 1)] == pids) & (ips < _USER_LIMIT)
        qkey = (qrank.astype(np.uint64) << _USER_BITS) | (ips & _USER_MASK)
        j = np.searchsorted(mkey, qkey, side="right") - 1
        safe = np.maximum(j, 0)
        hit = has & (j >= 0) & ((mkey[safe] >> _USER_BITS) == (qkey >> _USER_BITS)) & (ips < mend[safe])
        if not hit.any():
            return sym, dso
        j = j[hit]
        dso[hit] = files[j]
        off = ips[hit] - mstart[j] + pgoff[j]
        ufiles, fcode = np.unique(files.astype(str), return_inverse=True)
        code = fcode[j]
        by_file = np.argsort(code, kind="stable")
        bounds = np.searchsorted(code[by_file], np.arange(len(ufiles) + 1))
        names = np.empty(len(j), dtype=object)
        for k, f in enumerate(ufiles.tolist()):  # one vectorised lookup per mapped file
            sel = by_file[bounds[k]:bounds[k + 1]]
            if len(sel):
                names[sel] = self._elf_for(f).lookup(off[sel])
        sym[hit] = names
        return sym, dso

    def _elf_for(self, filename: str) -> _Elf:
        e = self._elf.get(filename)
        if e is None:
            path = os.path.join(self.symfs, filename.lstrip("/")) if self.symfs else filename
            e = _elf_cached(path) if filename.startswith("/") else _NO_ELF
            self._elf[filename] = e
        return e

    def _codes(self, pid: np.ndarray, ip: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, pl.Series, pl.Series]:
        """(codes, syms, dsos): each address's code into the sym and dso tables; kernel addresses by a search of
        kallsyms, user ones looked up once per distinct (pid, address)."""
        ip = np.asarray(ip, dtype=np.uint64)
        codes = np.empty(len(ip), dtype=np.int64)
        ksym, kdso = self._kernel_table()
        kc = self._kernel(ip[kernel])
        used = np.zeros(len(ksym), dtype=bool)  # only the kernel symbols named go into the String tables
        used[kc] = True
        codes[kernel] = (np.cumsum(used) - 1)[kc]
        ksym, kdso = ksym[used], kdso[used]
        user = ~kernel
        upid, prank = _factorize_small(np.asarray(pid, dtype=np.int64)[user])
        uip = ip[user]
        ukey = (prank.astype(np.uint64) << _USER_BITS) | (uip & _USER_MASK)
        big = uip >= _USER_LIMIT  # not a user address: keep it apart (resolves to [unknown])
        ukey[big] = uip[big]
        uu = np.sort(ukey)  # distinct keys from a plain sort (numpy's SIMD sort; argsort has none), codes by search
        if len(uu):
            uu = uu[np.append(True, uu[1:] != uu[:-1])]
        uinv = np.searchsorted(uu, ukey)
        small = uu < (np.uint64(len(upid)) << _USER_BITS)
        qpid = np.where(small, upid[np.minimum((uu >> _USER_BITS).astype(np.int64), max(len(upid) - 1, 0))]
                        if len(upid) else 0, -1)
        qip = np.where(small, uu & _USER_MASK, uu)
        usym, udso = self._user(qpid.astype(np.int64), qip.astype(np.uint64))
        codes[user] = len(ksym) + uinv
        return (codes, pl.Series("sym", np.concatenate([ksym, usym]), dtype=pl.String),
                pl.Series("dso", np.concatenate([kdso, udso]), dtype=pl.String))

    def resolve(self, pid: np.ndarray, ip: np.ndarray, kernel: np.ndarray) -> tuple[pl.Series, pl.Series]:
        """(sym, dso) of each address."""
        codes, syms, dsos = self._codes(pid, ip, kernel)
        idx = pl.Series(codes)
        return syms.gather(idx), dsos.gather(idx)

    # -- frames -----------------------------------------------------------------------------------------------
    def finish(self, parts: list[pl.DataFrame], cc_parts: list, tables) -> pl.DataFrame:
        """One event's sample frame from its decoded parts: symbols, callchains, comm; rows in time order."""
        df = pl.concat(parts, how="diagonal_relaxed")
        n = df.height
        if "ts" in df.columns and "_event" in df.columns:  # rows grouped by event, each group in time order
            ev = df["_event"].to_numpy()
            ts = df["ts"].to_numpy()
            order = np.argsort(ts, kind="stable") if not n or (ev == ev[0]).all() else np.lexsort((ts, ev))
        elif "ts" in df.columns:
            order = np.argsort(df["ts"].to_numpy(), kind="stable")
        else:
            order = np.arange(n, dtype=np.int64)
        pid0 = self._pid_classes(df["pid"].to_numpy() if "pid" in df.columns else np.full(n, -1, dtype=np.int32))
        pid, ip, misc = pid0[order], df["ip"].to_numpy()[order], df["misc"].to_numpy()[order]
        kern = ((misc & 7) == 1) | (((misc & 7) == 0) & (ip >= KERNEL_START))
        chains = None
        if "_cc_part" in df.columns:
            flats, counts = [], []
            for k in df["_cc_part"].unique(maintain_order=True).to_list():
                ips, offs = cc_parts[k]
                flats.append(ips)
                counts.append(np.diff(offs))
            # the sample addresses are named in the same pass as the stacks' (most are their first frame)
            flat, cnt = (flats[0], counts[0]) if len(flats) == 1 else (np.concatenate(flats), np.concatenate(counts))
            *chains, sym, dso = self._callchains(flat, cnt, pid0, order, (pid, ip, kern))
            df = df.drop("_cc_part", "_cc_n")
        else:
            sym, dso = self.resolve(pid, ip, kern)
        df = _take(df, order) if n else df
        df = df.with_columns(sym.alias("sym"), dso.alias("dso"))
        if chains is not None:
            df = df.with_columns(*chains)
        else:
            df = df.with_columns(pl.lit([], dtype=pl.List(pl.String)).alias("callchain"),
                                 pl.lit([], dtype=pl.List(pl.UInt64)).alias("callchain_ip"))
        df = self._comm(df)
        lead = [c for c in ("ts", "cpu", "pid", "tid", "comm", "period", "ip", "sym", "dso", "callchain",
                            "callchain_ip") if c in df.columns]
        return df.select(lead + [c for c in df.columns if c not in lead])

    def _callchains(self, flat: np.ndarray, cnt: np.ndarray, pid: np.ndarray, order: np.ndarray,
                    extra: tuple) -> tuple[pl.Series, pl.Series, pl.Series, pl.Series]:
        """``callchain`` and ``callchain_ip`` List columns from the raw callchains (``flat`` words, ``cnt`` per
        sample), returned in the row ``order`` given, then the (sym, dso) of the ``extra`` (pid, ip, kernel)
        addresses, resolved in the same pass. Samples repeat the same stacks, so each distinct (pid, stack) is
        stripped of its context markers, named and listed once (:mod:`.stacks`), then gathered per sample."""
        offs = np.zeros(len(cnt) + 1, dtype=np.int64)
        np.cumsum(cnt, out=offs[1:])
        first, inv = distinct_stacks(flat, offs, pid)
        ucnt = cnt[first]
        uoffs = np.zeros(len(first) + 1, dtype=np.int64)
        np.cumsum(ucnt, out=uoffs[1:])
        take = np.repeat(offs[:-1][first] - uoffs[:-1], ucnt) + np.arange(int(uoffs[-1]), dtype=np.int64)
        uflat, ucnt, ukern, dropped = strip_context(flat[take], uoffs)  # PERF_CONTEXT_* out, as perf script prints
        self.invalid_callchains += int(dropped[inv].sum())
        upid = np.repeat(np.asarray(pid, dtype=np.int64)[first], ucnt)
        epid, eip, ekern = (np.asarray(a) for a in extra)
        # a sample's address is mostly its stack's first frame: that frame's name serves (same address, same side
        # of the kernel boundary, same process class); the others are named in the same pass as the frames
        g = inv[order]
        lead = np.zeros(len(first) + 1, dtype=np.int64)
        np.cumsum(ucnt, out=lead[1:])
        at = np.minimum(lead[:-1][g], max(len(uflat) - 1, 0))
        same = ucnt[g] > 0
        if len(uflat):
            same &= (uflat[at] == eip) & (ukern[at] == ekern)
        other = np.flatnonzero(~same)
        m = len(uflat)
        codes, syms, dsos = self._codes(np.concatenate([upid, epid[other].astype(np.int64)]),
                                        np.concatenate([uflat, eip[other].astype(np.uint64)]),
                                        np.concatenate([ukern, ekern[other]]))
        usym = syms.gather(pl.Series(codes[:m]))
        ec = codes[np.where(same, at, 0)] if m else np.zeros(len(g), dtype=np.int64)
        ec[other] = codes[m:]
        ecodes = pl.Series(ec)
        urow = pl.Series("row", np.repeat(np.arange(len(first), dtype=np.int64), ucnt)).set_sorted()  # sorted fast path
        lists = (pl.DataFrame({"row": urow, "callchain": usym, "callchain_ip": pl.Series(uflat, dtype=pl.UInt64)})
                 .group_by("row", maintain_order=True).agg("callchain", "callchain_ip"))
        # stacks left empty get the one empty list appended after the grouped ones
        empty = pl.DataFrame({"row": [-1], "callchain": [[]], "callchain_ip": [[]]},
                             schema={"row": pl.Int64, "callchain": pl.List(pl.String),
                                     "callchain_ip": pl.List(pl.UInt64)})
        full = pl.concat([lists, empty], rechunk=True)
        where = np.full(len(first), lists.height, dtype=np.int64)
        where[lists["row"].to_numpy()] = np.arange(lists.height)
        idx = pl.Series(where[inv[order]])
        return (full["callchain"].gather(idx), full["callchain_ip"].gather(idx), syms.gather(ecodes),
                dsos.gather(ecodes))

    def _comm(self, df: pl.DataFrame) -> pl.DataFrame:
        if "tid" not in df.columns:
            return df.with_columns(pl.lit(None, dtype=pl.String).alias("comm"))
        c = self.comm
        if c is None or not c.height:
            comm = pl.lit(None, dtype=pl.String)
            return df.with_columns(pl.when(pl.col("pid") == 0).then(pl.lit("swapper")).otherwise(comm).alias("comm"))
        has_ts = "ts" in c.columns and "ts" in df.columns
        # joined as integer codes into the distinct comm strings; the strings are gathered once at the end
        names, code = np.unique(c["comm"].fill_null("").to_numpy().astype(object), return_inverse=True)
        cc = pl.DataFrame({"tid": c["tid"].cast(pl.Int32), "_cts": c["ts"].cast(pl.Int64) if has_ts else
                           pl.Series(np.zeros(c.height, dtype=np.int64)), "_code": code.astype(np.int32)})
        cc = cc.with_columns(pl.when(c["comm"].is_null()).then(None).otherwise(pl.col("_code")).alias("_code"))
        cc = cc.sort("_cts", maintain_order=True)
        n = df.height
        cts = df["ts"].cast(pl.Int64).to_numpy() if "ts" in df.columns else np.zeros(n, dtype=np.int64)
        order = np.argsort(cts, kind="stable")
        left = pl.DataFrame({"tid": df["tid"].to_numpy()[order], "_cts": cts[order],
                             "_row": order.astype(np.int64)}).with_columns(pl.col("_cts").set_sorted())
        j = left.join_asof(cc, on="_cts", by="tid", strategy="backward", check_sortedness=False)
        got = np.full(n, -1, dtype=np.int64)
        got[j["_row"].to_numpy()] = j["_code"].fill_null(-1).to_numpy()
        # a thread with no COMM yet carries the comm its parent had when it forked (up the fork chain)
        if self.fork is not None and self.fork.height and (got < 0).any():
            fk = (self.fork.select(pl.col("tid").cast(pl.Int32), pl.col("ptid").cast(pl.Int32),
                                   pl.col("time").cast(pl.Int64).alias("_ftime")).unique("tid", keep="last"))
            miss = np.nonzero(got < 0)[0]
            # the answer depends on the thread only (its fork time), so it is searched once per distinct thread
            mtid, minv = _factorize_small(df["tid"].to_numpy()[miss].astype(np.int64))
            tgot = np.full(len(mtid), -1, dtype=np.int64)
            anc = pl.DataFrame({"_row": np.arange(len(mtid), dtype=np.int64), "_anc": mtid.astype(np.int32)})
            for _ in range(16):
                anc = anc.join(fk, left_on="_anc", right_on="tid", how="inner")
                if not anc.height:
                    break
                look = anc.select("_row", pl.col("ptid").alias("tid"), pl.col("_ftime").alias("_cts")).sort("_cts")
                hit = look.join_asof(cc, on="_cts", by="tid", strategy="backward", check_sortedness=False)
                found = hit.filter(pl.col("_code").is_not_null())
                rows = found["_row"].to_numpy()
                first = rows[tgot[rows] < 0]
                tgot[first] = found.filter(pl.Series(tgot[rows] < 0))["_code"].to_numpy()
                anc = hit.filter(pl.col("_code").is_null()).select("_row", pl.col("tid").alias("_anc"))
            got[miss] = tgot[minv]
        # no comm found: swapper for pid 0, else ":tid" as perf prints (named once per distinct tid)
        miss = got < 0
        pid = df["pid"].to_numpy() if "pid" in df.columns else np.full(n, -1, dtype=np.int32)
        got[miss & (pid == 0)] = len(names)
        other = miss & (pid != 0)
        utid, tinv = _factorize_small(df["tid"].to_numpy()[other].astype(np.int64))
        got[other] = len(names) + 1 + tinv
        table = np.concatenate([names, np.array(["swapper"] + [f":{t}" for t in utid.tolist()], dtype=object)])
        return df.with_columns(pl.Series("comm", table, dtype=pl.String).gather(pl.Series(got)))
