"""Faults: kill -9 mid-extraction, corrupt cache entries, stale temporary files, a cache path that is a file.

Each case ends in a correct result (byte-identical to a clean run, nothing left behind) or a one-line error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from analysis._atomic import atomic_path, clean_stale_temps, temp_owner
from analysis._checks import ClipauditError
from analysis.cache import EmbeddingCache
from analysis.cache.admin import verify_cache
from analysis.cli import main
from analysis.data import create_dataset

VIEWS = ["none", "hflip"]


def _cache(path, **kw):
    return EmbeddingCache(path, progress=False, chunk_size=4, batch_size=4, **kw)


def _entries(cache_dir: Path, namespace: str = "image") -> list[Path]:
    return sorted(p for p in (cache_dir / namespace).iterdir() if p.is_dir())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------------------------- kill -9
# The child stops (sleeps) at one point of the extraction and says so through a file; the test kills it.
KILL_CHILD = r"""
import contextlib, sys, time
from pathlib import Path
import analysis.cache.store as store
from analysis.cache import EmbeddingCache
from analysis.data import create_dataset
from analysis.models import load_model

cache_dir, folder, point, signal_file = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])

def stop():
    signal_file.touch()
    time.sleep(600)

model = load_model("clipaudit-tiny-vit")
if point == "encode":  # the third batch of 'none' (rows 8-11): rows 0-7 of both views are saved chunks
    encode, calls = model.encode_image, [0]
    def encode_image(x, **kw):
        calls[0] += 1
        if calls[0] == 5:
            stop()
        return encode(x, **kw)
    model.encode_image = encode_image
elif point == "consolidate":  # data.npy in place, valid.npy written to its temporary file, not yet renamed
    real_path = store.atomic_path
    @contextlib.contextmanager
    def atomic_path(path, suffix=""):
        with real_path(path, suffix) as tmp:
            yield tmp
            if Path(path).name == "valid.npy":
                stop()
    store.atomic_path = atomic_path
elif point == "after-meta":  # meta.json says complete, the chunks are not removed yet
    real_json = store.atomic_write_json
    def atomic_write_json(path, obj):
        real_json(path, obj)
        if obj.get("complete"):
            stop()
    store.atomic_write_json = atomic_write_json
cache = EmbeddingCache(cache_dir, progress=False, chunk_size=4, batch_size=4)
cache.image_views(model, create_dataset(folder), ["none", "hflip"])
sys.exit("the kill point was never reached")
"""
POINTS = ("encode", "consolidate", "after-meta")


def _files(cache_dir: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every consolidated array file (keys are entry folders, equal across caches)."""
    return {str(p.relative_to(cache_dir)): p.read_bytes() for p in cache_dir.rglob("*")
            if p.name in ("data.npy", "valid.npy", "skipped.json")}


def test_kill_9_during_encode_or_consolidation_then_rerun_is_byte_identical(tiny_vit, image_folder, tmp_path):
    procs = {}
    try:
        for point in POINTS:
            err = tmp_path / f"{point}.stderr"
            procs[point] = (subprocess.Popen(
                [sys.executable, "-c", KILL_CHILD, str(tmp_path / point), str(image_folder), point,
                 str(tmp_path / f"{point}.stopped")], stdout=subprocess.DEVNULL, stderr=open(err, "w")), err)
        start = time.monotonic()
        waiting = set(POINTS)
        while waiting:  # bounded: each child reaches its point within seconds of loading the model
            for point in list(waiting):
                proc, err = procs[point]
                if (tmp_path / f"{point}.stopped").exists():
                    proc.send_signal(signal.SIGKILL)
                    assert proc.wait(timeout=30) == -signal.SIGKILL
                    waiting.discard(point)
                elif proc.poll() is not None:
                    pytest.fail(f"child {point} exited ({proc.returncode}):\n{err.read_text()[-3000:]}")
            assert time.monotonic() - start < 240, f"children {waiting} never reached their kill point"
            time.sleep(0.02)
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    ds = create_dataset(str(image_folder))
    clean = _cache(tmp_path / "clean")
    clean.image_views(tiny_vit, ds, VIEWS)
    want = _files(tmp_path / "clean")
    assert len(want) == 6  # two consolidated entries
    assert list((tmp_path / "consolidate").rglob(".valid.npy.*.tmp"))  # the killed writer's temporary file
    encoded = {"encode": 8, "consolidate": 0, "after-meta": 0}  # only rows 8-11 of both views were lost
    for point in POINTS:
        folder = tmp_path / point
        rerun = _cache(folder)
        views = rerun.image_views(tiny_vit, ds, VIEWS)
        assert rerun.stats.images_encoded == encoded[point], point
        assert rerun.stats.healed == 0
        assert _files(folder) == want, point
        for name in VIEWS:
            assert views[name].features.tobytes() == clean.image_views(tiny_vit, ds, [name])[name].features.tobytes()
        assert not list(folder.rglob("*.tmp")), point
        assert not list(folder.rglob("chunks")), point


# ---------------------------------------------------------------------------------------------- corruption
def _garbage_like(path: Path) -> None:
    arr = np.load(path)
    rng = np.random.default_rng(0)
    np.save(path, rng.standard_normal(arr.shape).astype(arr.dtype))


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _edit_meta(entry: Path) -> None:
    meta = json.loads((entry / "meta.json").read_text())
    meta["parts"]["perturbation"] = "rot:15"  # says it is another view: must not be used for this one
    (entry / "meta.json").write_text(json.dumps(meta))


CONSOLIDATED = {
    "truncated data.npy": lambda e: _truncate(e / "data.npy"),
    "missing valid.npy": lambda e: (e / "valid.npy").unlink(),
    "garbage data.npy of the right shape": lambda e: _garbage_like(e / "data.npy"),
    "garbage valid.npy": lambda e: np.save(e / "valid.npy", np.zeros(12, bool)),
    "edited skipped.json": lambda e: (e / "skipped.json").write_text('[{"index": "0", "item": "x", "error": "y"}]'),
    "meta.json of other key parts": _edit_meta,
    "unreadable meta.json": lambda e: (e / "meta.json").write_text("{not json"),
}


@pytest.mark.parametrize("corrupt", list(CONSOLIDATED))
def test_corrupt_consolidated_entry_is_reported_deleted_and_recomputed(corrupt, tiny_vit, image_folder, tmp_path,
                                                                      caplog):
    ds = create_dataset(str(image_folder))
    want = _cache(tmp_path / "c").image_features(tiny_vit, ds)
    (entry,) = _entries(tmp_path / "c")
    assert (entry / "data.npy").is_file()
    CONSOLIDATED[corrupt](entry)
    cache = _cache(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="analysis.cache"):
        got = cache.image_features(tiny_vit, ds)
    assert cache.stats.healed == 1 and cache.stats.images_encoded == len(ds)
    np.testing.assert_array_equal(got.features, want.features)
    np.testing.assert_array_equal(got.valid, want.valid)
    assert got.skipped == want.skipped
    (record,) = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert str(entry) in record.getMessage() and "\n" not in record.getMessage()
    assert all(not rep.problems for rep in verify_cache(tmp_path / "c"))
    again = _cache(tmp_path / "c")
    again.image_features(tiny_vit, ds)
    assert again.stats.images_encoded == 0 and again.stats.healed == 0


def _garbage_chunk(path: Path) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["rows"] = np.random.default_rng(0).standard_normal(arrays["rows"].shape).astype(arrays["rows"].dtype)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # well-formed, old checksum


CHUNKS = {
    "truncated chunk": _truncate,
    "garbage rows in a well-formed chunk": _garbage_chunk,
    "empty chunk file": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("corrupt", list(CHUNKS))
def test_corrupt_chunk_is_reported_deleted_and_only_its_rows_recomputed(corrupt, tiny_vit, image_folder, tmp_path,
                                                                        caplog):
    ds = create_dataset(str(image_folder)).subset(range(7))  # 7 of 12 rows: a partial entry in chunks of 4
    want = _cache(tmp_path / "c").image_features(tiny_vit, ds)
    (entry,) = _entries(tmp_path / "c")
    chunks = sorted((entry / "chunks").glob("*.npz"))
    assert len(chunks) == 2
    CHUNKS[corrupt](chunks[1])  # rows 4-6
    cache = _cache(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="analysis.cache"):
        got = cache.image_features(tiny_vit, ds)
    assert cache.stats.healed == 1 and cache.stats.images_encoded == 3
    np.testing.assert_array_equal(got.features, want.features)
    (record,) = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert chunks[1].name in record.getMessage() and "\n" not in record.getMessage()


def test_corrupt_text_and_array_entries_are_recomputed(tiny_vit, tmp_path):
    texts = ["a cat", "a dog", "a bird"]
    want = _cache(tmp_path / "c").text_features(tiny_vit, texts)
    (entry,) = _entries(tmp_path / "c", "text")
    _garbage_like(entry / "data.npy")
    cache = _cache(tmp_path / "c")
    np.testing.assert_array_equal(cache.text_features(tiny_vit, texts), want)
    assert cache.stats.healed == 1 and cache.stats.texts_encoded == 3

    calls = []

    def compute():
        calls.append(1)
        return np.arange(12.0).reshape(3, 4)

    first = _cache(tmp_path / "c").array("memo", {"x": 1}, compute)
    (entry,) = _entries(tmp_path / "c", "memo")
    np.save(entry / "data.npy", np.zeros((3, 4)))
    cache = _cache(tmp_path / "c")
    np.testing.assert_array_equal(cache.array("memo", {"x": 1}, compute), first)
    assert len(calls) == 2 and cache.stats.healed == 1


def test_random_byte_corruption_never_gives_a_wrong_row(tiny_vit, image_folder, tmp_path):
    """Any byte changed or any truncation of any file: the rows read are the clean rows (healed or intact)."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    ds = create_dataset(str(image_folder))
    base = tmp_path / "base"
    want = _cache(base).image_views(tiny_vit, ds, VIEWS)
    _cache(base).image_features(tiny_vit, ds.subset(range(6)), perturbation="rot:15")  # a partial entry too
    files = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file() and ".locks" not in p.parts)
    assert any(f.endswith(".npz") for f in files) and any(f.endswith("data.npy") for f in files)

    @hypothesis.settings(max_examples=30, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(name=st.sampled_from(files), where=st.floats(0, 1, exclude_max=True),
                      value=st.integers(0, 255), truncate=st.booleans())
    def check(name, where, value, truncate):
        with tempfile.TemporaryDirectory() as tmp:
            cache_dir = Path(tmp) / "c"
            shutil.copytree(base, cache_dir)
            path = cache_dir / name
            data = bytearray(path.read_bytes())
            pos = int(where * len(data))
            if truncate:
                del data[pos:]
            else:
                data[pos] = value
            path.write_bytes(bytes(data))
            cache = _cache(cache_dir)
            got = cache.image_views(tiny_vit, ds, VIEWS)
            for view in VIEWS:
                np.testing.assert_array_equal(got[view].features, want[view].features)
                np.testing.assert_array_equal(got[view].valid, want[view].valid)
            part = cache.image_features(tiny_vit, ds.subset(range(6)), perturbation="rot:15")
            assert np.isfinite(part.features).all() and part.valid.all()
            assert cache.stats.healed <= 1
            healed.append(cache.stats.healed)

    healed: list[int] = []
    check()
    assert sum(healed) >= len(healed) // 2  # most corruptions hit checked bytes and were healed


# ---------------------------------------------------------------------------------------------- cache CLI
def test_cache_verify_finds_garbage_and_fix_deletes_it(tiny_vit, image_folder, tmp_path, capsys):
    ds = create_dataset(str(image_folder))
    _cache(tmp_path / "c").image_views(tiny_vit, ds, VIEWS)
    good, bad = _entries(tmp_path / "c")
    assert main(["cache", "verify", "--cache-dir", str(tmp_path / "c")]) == 0
    assert "2 intact, 0 corrupt" in capsys.readouterr().out
    _garbage_like(bad / "data.npy")
    assert main(["cache", "verify", "--cache-dir", str(tmp_path / "c")]) == 1
    out = capsys.readouterr().out
    assert f"image/{bad.name}: data.npy checksum mismatch" in out and good.name not in out
    assert (bad / "data.npy").exists()  # verify alone deletes nothing
    assert main(["cache", "verify", "--fix", "--cache-dir", str(tmp_path / "c")]) == 1
    assert "[deleted]" in capsys.readouterr().out
    assert not bad.exists() and (good / "data.npy").exists()
    assert main(["cache", "verify", "--cache-dir", str(tmp_path / "c")]) == 0
    cache = _cache(tmp_path / "c")
    cache.image_views(tiny_vit, ds, VIEWS)
    assert cache.stats.images_encoded == len(ds)  # only the deleted entry is computed again


def test_cache_clean_removes_temps_of_dead_processes_only(tiny_vit, image_folder, tmp_path, capsys):
    root = tmp_path / "c"
    _cache(root).image_features(tiny_vit, create_dataset(str(image_folder)))
    (entry,) = _entries(root)
    dead, alive = _dead_pid(), os.getppid()
    stale = entry / f".data.npy.{dead}-abc123_x.npy.tmp"
    stale.write_bytes(b"x" * 1000)
    live = entry / f".data.npy.{alive}-def456_y.npy.tmp"
    live.write_bytes(b"y")
    old = root / "image" / ".meta.json.k2j3h4.tmp"  # no process id (an older clipaudit): stale after a day
    old.write_bytes(b"z")
    recent = root / ".skipped.json.q9w8e7.tmp"
    recent.write_bytes(b"z")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    wordnet_tmp = root / "nltk_data" / "corpora" / f".wordnet-{dead}.tmp"
    wordnet_tmp.mkdir(parents=True)
    (wordnet_tmp / "data.noun").write_bytes(b"w" * 5000)

    assert main(["cache", "info", "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "stale temporary files (killed runs): 3" in out and stale.name in out and live.name not in out
    assert main(["cache", "clean", "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert not stale.exists() and not old.exists() and not wordnet_tmp.exists()
    assert live.exists() and recent.exists() and (entry / "data.npy").exists()
    assert "removed 3 item(s), 6.0 kB" in out and f".wordnet-{dead}.tmp" in out

    (root / "notes.txt").write_text("not the cache's")
    assert main(["cache", "clean", "--all", "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert not (root / "image").exists() and not (root / ".locks").exists()
    assert (root / "notes.txt").exists() and (root / "nltk_data").exists()  # only cache entries are removed
    assert "left alone (not a cache entry): notes.txt" in out


def test_a_cache_dir_that_is_a_file_is_one_line_error(tmp_path, capsys):
    afile = tmp_path / "cache.txt"
    afile.write_text("")
    for path in (afile, afile / "sub"):
        with pytest.raises(ClipauditError, match="give a folder") as err:
            EmbeddingCache(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    EmbeddingCache(afile, enabled=False)  # --no-cache never touches it
    assert main(["cache", "info", "--cache-dir", str(afile)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clipaudit cache: error:") and str(afile) in err and "\n" not in err


# ---------------------------------------------------------------------------------------------- temp files
def test_temp_files_carry_the_writer_pid_and_go_away_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target, suffix=".json") as tmp:
            assert temp_owner(tmp.name) == os.getpid() and tmp.name.startswith(".out.json.")
            tmp.write_text("half")
            raise RuntimeError
    assert not list(tmp_path.iterdir())


def test_opening_a_cache_removes_stale_temps_of_its_top_folders(tmp_path):
    dead = _dead_pid()
    (tmp_path / "c" / "image").mkdir(parents=True)
    stale = [tmp_path / "c" / f".x.{dead}-aaaa.tmp", tmp_path / "c" / "image" / f".y.{dead}-bbbb.npy.tmp"]
    for path in stale:
        path.write_text("x")
    mine = tmp_path / "c" / f".z.{os.getpid()}-cccc.tmp"
    mine.write_text("x")
    EmbeddingCache(tmp_path / "c", progress=False)
    assert not any(p.exists() for p in stale) and mine.exists()
    assert clean_stale_temps(tmp_path / "c") == []


def test_wordnet_preparation_removes_dead_runs_temp_folders(tmp_path, monkeypatch):
    from analysis.data import wordnet

    origin = tmp_path / "dict"
    origin.mkdir()
    for name in ("data.noun", "index.noun", "index.sense"):
        (origin / name).write_text(name)
    root = tmp_path / "nltk_data"
    dead = root / "corpora" / f".wordnet-{_dead_pid()}.tmp"
    dead.mkdir(parents=True)
    (dead / "data.noun").write_text("half a copy")
    other = root / "corpora" / f".wordnet-{os.getppid()}.tmp"  # a live process preparing it: left alone
    other.mkdir()
    real_copy = shutil.copyfile

    def failing_copy(src, dst):
        if Path(src).name == "index.sense":
            raise OSError("disk full")
        return real_copy(src, dst)

    monkeypatch.setattr(wordnet.shutil, "copyfile", failing_copy)
    with pytest.raises(OSError, match="disk full"):
        wordnet._prepare_system(origin, root)
    assert not dead.exists() and other.exists()
    assert {p.name for p in (root / "corpora").iterdir()} == {".wordnet.lock", other.name}
    monkeypatch.setattr(wordnet.shutil, "copyfile", real_copy)
    target = wordnet._prepare_system(origin, root)
    assert (target / "data.noun").read_text() == "data.noun" and (target / "lexnames").is_file()
    assert {p.name for p in (root / "corpora").iterdir()} == {".wordnet.lock", other.name, "wordnet"}
    dead.mkdir()  # a run killed while preparing, after another one prepared it: removed on the next look
    assert wordnet._prepare_system(origin, root) == target and not dead.exists()
