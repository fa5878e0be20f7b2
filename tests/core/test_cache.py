"""The one on-disk cache (tcomp.cache): JSON tables per machine, written atomically, never trusted — a file that is
not a table of this format and machine, or an entry of the wrong kind, is ignored, and rewritten at the next write."""
import json
import os

import pytest
import torch

from tcomp.cache import FORMAT, CacheWarning, DiskCache, machine_key


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TCOMP_CACHE_DIR", str(tmp_path))
    DiskCache._open.clear()
    yield tmp_path
    DiskCache._open.clear()


def test_a_value_survives_a_new_process(cache_dir):
    DiskCache.open("t").put("k", [1.0, None])
    DiskCache._open.clear()
    assert DiskCache.open("t").get("k") == [1.0, None]
    assert DiskCache.open("t").get("missing") is DiskCache.MISSING


def test_two_writers_keep_both(cache_dir):
    path = cache_dir / f"t-{machine_key()}.json"
    a, b = DiskCache(path, machine_key()), DiskCache(path, machine_key())  # opened before either wrote
    a.put("x", 1.0)
    b.put("y", 2.0)
    fresh = DiskCache(path, machine_key())
    assert fresh.get("x") == 1.0 and fresh.get("y") == 2.0
    assert not [p for p in cache_dir.iterdir() if ".tmp" in p.name]  # written by renaming a whole file


@pytest.mark.parametrize("content", ["{not json", "[]", "null", "0", json.dumps({"entries": []}),
                                     json.dumps({"format": FORMAT + 1, "machine": "?", "entries": {"k": 1}})])
def test_a_file_that_is_not_a_table_is_ignored_with_a_warning_and_rewritten(cache_dir, content):
    path = cache_dir / f"t-{machine_key()}.json"
    path.write_text(content)
    with pytest.warns(CacheWarning, match="ignoring the cache file"):
        cache = DiskCache.open("t")
    assert cache.get("k") is DiskCache.MISSING
    cache.put("k", 3)
    DiskCache._open.clear()
    assert DiskCache.open("t").get("k") == 3


def test_another_machines_table_is_not_read(cache_dir):
    path = cache_dir / f"t-{machine_key()}.json"
    path.write_text(json.dumps({"format": FORMAT, "machine": "another", "entries": {"k": 1}}))
    with pytest.warns(CacheWarning):
        assert DiskCache.open("t").get("k") is DiskCache.MISSING


def test_an_entry_of_the_wrong_kind_is_missing(cache_dir):
    DiskCache.open("t").put("k", "fast")
    assert DiskCache.open("t").get("k", valid=lambda v: isinstance(v, float)) is DiskCache.MISSING


def test_a_directory_in_the_files_place_costs_only_the_measurement(cache_dir):
    (cache_dir / f"t-{machine_key()}.json").mkdir()
    with pytest.warns(CacheWarning, match="this process only"):
        cache = DiskCache.open("t")
    cache.put("k", 1.0)  # nothing raised
    assert cache.get("k") == 1.0  # kept for this process
    assert not [p for p in cache_dir.iterdir() if ".tmp" in p.name]


def test_the_machine_key_follows_the_cpu_capability_isa_limit_and_threads(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    key = machine_key()
    with monkeypatch.context() as mp:
        mp.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
        assert machine_key() != key
    with monkeypatch.context() as mp:
        mp.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
        assert machine_key() != key
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert machine_key() != key
    finally:
        torch.set_num_threads(threads)
    assert machine_key() == key


def _write_many(args):
    directory, worker = args
    os.environ["TCOMP_CACHE_DIR"] = directory
    DiskCache._open.clear()
    cache = DiskCache.open("t")
    for k in range(200):
        cache.put(f"w{worker}-{k}", k)


def test_processes_writing_at_once_keep_every_entry(cache_dir):
    """Four processes writing 200 entries each into one table at the same time: the lock around read-merge-rename
    keeps all 800 (without it, entries are lost: checked by taking the lock away)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_write_many, [(str(cache_dir), w) for w in range(4)])
    DiskCache._open.clear()
    entries = DiskCache.open("t").entries
    assert len(entries) == 800 and all(entries[f"w{w}-{k}"] == k for w in range(4) for k in range(200))


def test_a_cache_that_cannot_be_read_costs_only_the_measurements(cache_dir, monkeypatch):
    from pathlib import Path

    real_exists = Path.exists

    def denied(self, *args, **kwargs):
        if self.name.startswith("t-"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", denied)
    with pytest.warns(CacheWarning, match="PermissionError"):
        cache = DiskCache.open("t")
    cache.put("k", 1.0)  # nothing raised
    assert cache.get("k") == 1.0


def test_a_value_json_cannot_hold_is_refused_and_the_table_still_works(cache_dir):
    cache = DiskCache.open("t")
    with pytest.warns(CacheWarning, match="not caching"):
        cache.put("bad", object())
    cache.put("good", 2)
    DiskCache._open.clear()
    assert DiskCache.open("t").get("good") == 2 and DiskCache.open("t").get("bad") is DiskCache.MISSING
