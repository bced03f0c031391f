"""Embedding cache: hits encode nothing, keys separate what differs, interrupted runs resume."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from analysis.cache import EmbeddingCache
from analysis.data import create_dataset


def test_second_run_encodes_nothing(tiny_vit, image_folder, tmp_path):
    ds = create_dataset(str(image_folder))
    first = EmbeddingCache(tmp_path / "c", progress=False, chunk_size=5)
    a = first.image_features(tiny_vit, ds)
    assert first.stats.images_encoded == 12
    second = EmbeddingCache(tmp_path / "c", progress=False, chunk_size=5)  # a new process, same folder
    b = second.image_features(tiny_vit, ds)
    assert second.stats.images_encoded == 0 and second.stats.hits == 1
    np.testing.assert_array_equal(a.features, b.features)
    t1 = second.text_features(tiny_vit, ["a", "b"])
    third = EmbeddingCache(tmp_path / "c", progress=False)
    np.testing.assert_array_equal(third.text_features(tiny_vit, ["a", "b"]), t1)
    assert third.stats.texts_encoded == 0


def test_keys_separate_perturbation_model_data_and_dtype(tiny_vit, tiny_rn, image_folder, tmp_path):
    ds = create_dataset(str(image_folder))
    cache = EmbeddingCache(tmp_path / "c", progress=False)
    plain = cache.image_features(tiny_vit, ds)
    flipped = cache.image_features(tiny_vit, ds, perturbation="hflip")
    assert cache.stats.images_encoded == 24
    assert not np.allclose(plain.features, flipped.features)
    cache.image_features(tiny_rn, ds)
    cache.image_features(tiny_vit, ds.subset([0, 1]))  # a subset reads its parent's rows
    assert cache.stats.images_encoded == 24 + 12
    cache32 = EmbeddingCache(tmp_path / "c", progress=False, dtype="float32")
    cache32.image_features(tiny_vit, ds)
    assert cache32.stats.images_encoded == 12
    np.testing.assert_allclose(cache32.image_features(tiny_vit, ds).features, plain.features, atol=2e-3)


def test_stored_dtype_key_and_checksums_are_recorded(tiny_vit, image_folder, tmp_path):
    import hashlib
    import json

    from analysis.cache import cache_key

    cache = EmbeddingCache(tmp_path / "c", progress=False)
    cache.image_features(tiny_vit, create_dataset(str(image_folder)))
    (meta,) = list((tmp_path / "c" / "image").glob("*/meta.json"))
    record = json.loads(meta.read_text())
    assert record["dtype"] == "float16" and record["complete"] and record["shape"] == [12, 32]
    data = np.load(meta.parent / "data.npy")
    assert data.dtype == np.float16
    # the entry names its key, and the key is the hash of the recorded parts
    assert record["key"] == meta.parent.name == cache_key(record["parts"]) == cache.stats.keys[0]
    assert record["parts"]["model"]["name"] == "clipaudit-tiny-vit" and record["parts"]["perturbation"] == "none"
    text = (meta.parent / "skipped.json").read_text()
    assert record["sha256"]["skipped.json"] == hashlib.sha256(b"s" + text.encode()).hexdigest()
    h = hashlib.sha256(f"a{data.dtype.str}{data.shape}".encode() + data.tobytes()).hexdigest()
    assert record["sha256"]["data.npy"] == h


def test_a_cache_where_locks_cannot_be_created_is_still_read(tiny_vit, image_folder, tmp_path, monkeypatch):
    """A read-only cache (lock files cannot be created there) is read without locks."""
    from filelock import FileLock

    ds = create_dataset(str(image_folder))
    want = EmbeddingCache(tmp_path / "c", progress=False).image_features(tiny_vit, ds)

    refused = []

    def refuse(self, *args, **kwargs):
        refused.append(self.lock_file)
        raise PermissionError(13, "Permission denied", str(self.lock_file))

    monkeypatch.setattr(FileLock, "acquire", refuse)
    cache = EmbeddingCache(tmp_path / "c", progress=False)
    np.testing.assert_array_equal(cache.image_features(tiny_vit, ds).features, want.features)
    assert cache.stats.images_encoded == 0 and refused


class Interrupting:
    """Wraps a dataset and raises KeyboardInterrupt when image ``at`` is read (once)."""

    def __init__(self, ds, at):
        self.ds, self.at, self.armed = ds, at, True

    def __getattr__(self, name):
        return getattr(self.ds, name)

    def __len__(self):
        return len(self.ds)

    def load_image(self, i):
        if self.armed and i == self.at:
            self.armed = False
            raise KeyboardInterrupt
        return self.ds.load_image(i)


def test_interrupted_extraction_resumes_from_last_chunk(tiny_vit, image_folder, tmp_path):
    ds = create_dataset(str(image_folder))
    wrapped = Interrupting(ds, at=9)
    cache = EmbeddingCache(tmp_path / "c", progress=False, chunk_size=4)
    with pytest.raises(KeyboardInterrupt):
        cache.image_features(tiny_vit, wrapped)
    # chunks [0,4) and [4,8) were encoded and saved; chunk [8,12) was lost before its batch reached the encoder
    assert cache.stats.images_encoded == 8 and cache.stats.images_decoded == 10
    resumed = EmbeddingCache(tmp_path / "c", progress=False, chunk_size=4)
    out = resumed.image_features(tiny_vit, wrapped)
    assert resumed.stats.images_encoded == 4
    fresh = EmbeddingCache(None, progress=False, enabled=False).image_features(tiny_vit, ds)
    np.testing.assert_allclose(out.features, fresh.features, atol=2e-3)


def test_corrupt_images_are_skipped_and_listed(tiny_vit, image_folder, tmp_path):
    bad = image_folder / "green_leaf" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    Image.new("RGB", (3, 3)).save(image_folder / "blue_sky" / "ok.png")
    ds = create_dataset(str(image_folder))
    out = EmbeddingCache(tmp_path / "c", progress=False).image_features(tiny_vit, ds)
    assert (~out.valid).sum() == 1
    (entry,) = out.skipped
    assert entry["item"] == str(bad) and "UnidentifiedImageError" in entry["error"]
    assert np.all(out.features[~out.valid] == 0)


def test_array_memo(tmp_path):
    calls = []
    cache = EmbeddingCache(tmp_path / "c", progress=False)

    def compute():
        calls.append(1)
        return np.arange(6).reshape(2, 3)

    a = cache.array("tokens", {"x": 1}, compute)
    b = EmbeddingCache(tmp_path / "c", progress=False).array("tokens", {"x": 1}, compute)
    np.testing.assert_array_equal(a, b)
    assert len(calls) == 1


def test_transform_key_ignores_function_addresses(tiny_vit):
    """A transform holding a plain function has a memory address in its repr; the key must not."""
    import copy

    from torchvision import transforms as T

    def to_rgb(im):
        return im.convert("RGB")

    a, b = copy.copy(tiny_vit), copy.copy(tiny_vit)
    a.preprocess = T.Compose([to_rgb, T.ToTensor()])
    b.preprocess = T.Compose([lambda im: im, T.ToTensor()])
    assert " at 0x" in repr(a.preprocess)
    key = EmbeddingCache.transform_key(a)
    assert "0x" not in key and "to_rgb>" in key and "ToTensor()" in key
    assert EmbeddingCache.transform_key(a) != EmbeddingCache.transform_key(b)
