"""The one on-disk cache: every measurement tcomp keeps across processes, in one format.

What is kept: the cost model's machine constants (:mod:`tcomp.cost.machine`), the time of a layer and of an
option against it (:mod:`tcomp.approx.option_time`), a model's option measurements (:mod:`tcomp.approx.measurements`)
and the two layouts' times of a program (:mod:`tcomp.passes.layout`). Each is a :class:`DiskCache` table: one JSON file
``<dir>/<name>-<machine key>[-<scope>].json`` holding ``{"format": 1, "machine": <key>, "entries": {...}}``.

- **Machine key.** Measured times belong to the machine that measured them: the processor, the CPU capability
  torch dispatches to (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``: an AVX2 run of an AVX-512 machine is
  another machine), the torch version and the number of threads. A file of another machine key is not read.
- **Never trusted.** JSON only (nothing is unpickled). A file that does not parse, has another format or machine
  key, or whose ``entries`` is not an object is ignored with a :class:`CacheWarning` and rewritten at the next
  write; a single entry of the wrong kind is treated as missing by the reader's ``valid`` check.
- **Atomic.** A write holds a lock on ``<file>.lock``, merges what another process wrote meanwhile, and renames a
  temporary file over the table: an interrupted compilation keeps what it measured, and processes writing at the
  same time keep all of it.
- **Where.** ``TCOMP_CACHE_DIR`` (default ``~/.cache/tcomp``). A cache that cannot be read or written (no
  permission, read-only, a directory in the file's place) costs only the measurements: they are kept for the
  process.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

FORMAT = 1


class CacheWarning(UserWarning):
    """A cache file was unreadable or not tcomp's, and is ignored (and rewritten at the next write)."""


def cache_dir() -> Path:
    """``TCOMP_CACHE_DIR``, default ``~/.cache/tcomp``."""
    return Path(os.environ.get("TCOMP_CACHE_DIR", Path.home() / ".cache" / "tcomp"))


def _cpu_info() -> tuple[str, list[str]]:
    """The processor's name and its CPU flags (from /proc/cpuinfo where there is one)."""
    name, flags = None, []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name is None:
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = value.split()
                    break
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), flags


def machine_description() -> str:
    """The machine in words, for figures: the processor, the CPU flags that decide which arithmetic is fast
    (AVX2, AVX-512, AVX512-BF16, AMX), the capability torch dispatches to, the oneDNN ISA limit and the threads."""
    name, flags = _cpu_info()
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return (f"{name} [{' '.join(shown) or 'no AVX flags read'}], torch capability "
            f"{torch.backends.cpu.get_cpu_capability()}{f', ONEDNN_MAX_CPU_ISA={isa}' if isa else ''}, "
            f"{torch.get_num_threads()} thread(s)")


def machine_key() -> str:
    """What measured times depend on, hashed: the processor, the CPU capability torch dispatches to and the oneDNN
    ISA limit, the torch version, the thread count and the device."""
    cpu, _ = _cpu_info()
    capability = torch.backends.cpu.get_cpu_capability()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    raw = f"{cpu}|{capability}|{isa}|{torch.__version__}|{torch.get_num_threads()}|cpu"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


class DiskCache:
    """One table of the cache (see the module docstring): string keys, JSON values. :meth:`open` shares one
    instance per file within a process, so a file is read once."""

    MISSING = object()   # what :meth:`get` returns for an absent or rejected entry (None is a valid value)
    _open: dict[str, "DiskCache"] = {}

    def __init__(self, path: Path, machine: str):
        self.path = path
        self.machine = machine
        self.entries: dict[str, Any] = self._read()

    @classmethod
    def open(cls, name: str, scope: str = "") -> "DiskCache":
        machine = machine_key()
        path = cache_dir() / f"{name}-{machine}{'-' + scope if scope else ''}.json"
        if str(path) not in cls._open:
            cls._open[str(path)] = cls(path, machine)
        return cls._open[str(path)]

    def get(self, key: str, valid: Callable[[Any], bool] = lambda v: True) -> Any:
        """The entry, or :attr:`MISSING` when there is none or ``valid`` rejects it."""
        value = self.entries.get(key, self.MISSING)
        return value if value is not self.MISSING and valid(value) else self.MISSING

    def put(self, key: str, value: Any) -> None:
        """Record one entry, and write the table: under a lock on ``<file>.lock``, what another process wrote meanwhile
        is read and merged, and the whole file replaced by renaming a temporary one. A value JSON cannot hold is not
        kept (with a :class:`CacheWarning`)."""
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            warnings.warn(f"tcomp: not caching {key!r} in {self.path.name}: {err}", CacheWarning, stacklevel=2)
            return
        self.entries[key] = value
        tmp = self.path.with_name(f"{self.path.name}.tmp{os.getpid()}-{threading.get_ident()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock():
                self.entries = {**self._read(quiet=True), **self.entries}
                tmp.write_text(json.dumps({"format": FORMAT, "machine": self.machine, "entries": self.entries}))
                tmp.replace(self.path)
        except OSError:  # read-only, or a directory in the file's place: only the next process loses out
            with contextlib.suppress(OSError):
                tmp.unlink()

    @contextlib.contextmanager
    def _lock(self):
        """An exclusive lock on ``<file>.lock`` while the table is read, merged and replaced (POSIX ``flock``;
        where there is none, writers race and the last rename wins)."""
        if fcntl is None:
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self, quiet: bool = False) -> dict[str, Any]:
        try:
            if not self.path.exists():
                return {}
            if self.path.is_dir():
                if not quiet:
                    warnings.warn(f"tcomp: a directory is in the place of the cache file {self.path}: measurements "
                                  f"are kept for this process only", CacheWarning, stacklevel=3)
                return {}
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            return self._ignored(f"unreadable ({type(err).__name__})", quiet)
        if not (isinstance(data, dict) and data.get("format") == FORMAT and data.get("machine") == self.machine
                and isinstance(data.get("entries"), dict)):
            return self._ignored("not a tcomp cache table of this format and machine", quiet)
        return data["entries"]

    def _ignored(self, why: str, quiet: bool) -> dict:
        if not quiet:
            warnings.warn(f"tcomp: ignoring the cache file {self.path}: {why}; it is rewritten at the next "
                          f"measurement", CacheWarning, stacklevel=4)
        return {}
