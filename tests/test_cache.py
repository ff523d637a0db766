"""The content-addressed cache on real CIFAR-10 tensors: keys, integrity, locking, gc."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import DATA

from bench.cache import Cache, cache_key, resolve_cache_dir


@pytest.fixture(scope="module")
def images():
    """A real 64-image CIFAR-10 slice as float tensors (what a perturbation looks like)."""
    from registry import DATASETS

    splits = DATASETS.create("cifar10-mini").load(DATA)
    return splits.train.x[:64].float() / 255.0


def test_key_is_canonical_and_covers_every_field():
    a = {"attack": "random", "params": {"mode": "class", "epsilon": 8.0}, "seed": 0, "dataset": "ab"}
    b = {"dataset": "ab", "seed": 0, "params": {"epsilon": 8.0, "mode": "class"}, "attack": "random"}
    assert cache_key("perturbation", a) == cache_key("perturbation", b)
    assert len(cache_key("perturbation", a)) == 64
    for change in ({"seed": 1}, {"dataset": "ac"}, {"params": {"mode": "class", "epsilon": 4.0}}):
        assert cache_key("perturbation", {**a, **change}) != cache_key("perturbation", a)
    assert cache_key("index", a) != cache_key("perturbation", a)


def test_roundtrip_is_safetensors_plus_json_manifest(tmp_path, images):
    cache = Cache(tmp_path)
    spec = {"what": "slice", "n": 64}
    entry, created = cache.get_or_create("perturbation", spec, lambda: ({"delta": images}, {"mode": "sample"}))
    assert created and entry.meta == {"mode": "sample"}
    again, created = cache.get_or_create("perturbation", spec, lambda: pytest.fail("must not recompute"))
    assert not created and torch.equal(again.tensors["delta"], images)
    payload, manifest = cache.paths("perturbation", entry.key)
    assert payload.parent.name == entry.key[:2] and payload.parent.parent.name == "perturbation"
    assert payload.read_bytes()[8:9] == b"{"  # safetensors: u64 header length, then a JSON header
    m = json.loads(manifest.read_text())
    assert m["spec"] == spec and m["payload"]["bytes"] == payload.stat().st_size
    assert m["tensors"] == {"delta": {"dtype": "float32", "shape": [64, 3, 32, 32]}}
    assert m["versions"]["torch"] and m["seconds"] is not None
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete-payload", "garble-manifest"])
def test_damaged_entry_is_detected_and_regenerated(tmp_path, images, damage):
    cache = Cache(tmp_path)
    spec = {"damage": damage}
    entry, _ = cache.get_or_create("perturbation", spec, lambda: ({"delta": images}, {"mode": "sample"}))
    payload, manifest = cache.paths("perturbation", entry.key)
    if damage == "flip":
        data = bytearray(payload.read_bytes())
        data[-100] ^= 0xFF
        payload.write_bytes(bytes(data))
    elif damage == "truncate":
        payload.write_bytes(payload.read_bytes()[:1000])
    elif damage == "delete-payload":
        payload.unlink()
    else:
        manifest.write_text("{not json")
    assert cache.get("perturbation", entry.key) is None
    assert not payload.exists() and not manifest.exists()
    again, created = cache.get_or_create("perturbation", spec, lambda: ({"delta": images}, {"mode": "sample"}))
    assert created and torch.equal(again.tensors["delta"], images)
    assert cache.verify() == []


def test_concurrent_callers_compute_once(tmp_path, images):
    """Four threads (each its own lock handle, as separate processes would) ask for one key."""
    calls = []

    def make():
        calls.append(threading.get_ident())
        time.sleep(0.3)  # long enough that every other caller arrives while this one computes
        return {"delta": images * 2}, {"mode": "sample"}

    results = []

    def worker():
        results.append(Cache(tmp_path).get_or_create("perturbation", {"k": 1}, make))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
    assert all(torch.equal(e.tensors["delta"], images * 2) for e, _ in results)


def test_soft_lock_mode_works_and_bad_mode_is_refused(tmp_path, images):
    cache = Cache(tmp_path, lock="soft")
    entry, created = cache.get_or_create("index", {"r": 0.5}, lambda: ({"index": torch.arange(10)}, {}))
    assert created and torch.equal(entry.tensors["index"], torch.arange(10))
    with pytest.raises(ValueError, match="lock: must be 'file' or 'soft'"):
        Cache(tmp_path, lock="nfs")


def test_ls_and_gc(tmp_path, images):
    cache = Cache(tmp_path)
    keep, _ = cache.get_or_create("perturbation", {"k": "keep"}, lambda: ({"delta": images}, {"mode": "sample"}))
    bad, _ = cache.get_or_create("perturbation", {"k": "bad"}, lambda: ({"delta": images}, {"mode": "sample"}))
    old, _ = cache.get_or_create("index", {"k": "old"}, lambda: ({"index": torch.arange(5)}, {}))
    payload, _ = cache.paths("perturbation", bad.key)
    payload.write_bytes(payload.read_bytes()[:-10])
    stale_tmp = payload.parent / ".x.safetensors.123.tmp"  # a writer killed mid-write
    stale_tmp.write_bytes(b"partial")
    os.utime(stale_tmp, (time.time() - 7200, time.time() - 7200))
    _, old_manifest = cache.paths("index", old.key)
    os.utime(old_manifest, (time.time() - 40 * 86400, time.time() - 40 * 86400))

    listed = {e["key"] for e in cache.entries()}
    assert listed == {keep.key, bad.key, old.key}
    report = cache.gc(older_than_days=30, dry_run=True)
    assert report["temp"] == [str(stale_tmp)] and stale_tmp.exists()
    report = cache.gc(older_than_days=30)
    assert len(report["corrupt"]) == 2 and len(report["unused"]) == 2 and not stale_tmp.exists()
    assert {e["key"] for e in cache.entries()} == {keep.key}


def test_cache_dir_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("UEBENCH_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("UEBENCH_CACHE")
    assert resolve_cache_dir() == Path("~/.cache/uebench/cache").expanduser()
