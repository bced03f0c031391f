"""One decode pass per image, subsets that read their root's rows, feature kinds, non-finite embeddings."""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from analysis._checks import ClipauditError
from analysis.cache import KINDS, EmbeddingCache
from analysis.data import create_dataset, get_perturbation
from analysis.data.base import ImageDataset


class Counting(ImageDataset):
    """A dataset that counts ``load_image`` calls per index (subsets of it count too)."""

    def __init__(self, inner: ImageDataset) -> None:
        self.inner = inner
        self.name, self.classnames, self.labels = inner.name, inner.classnames, inner.labels
        self.calls: Counter[int] = Counter()

    def load_image(self, index: int) -> Image.Image:
        self.calls[int(index)] += 1
        return self.inner.load_image(index)

    def describe(self, index: int) -> str:
        return self.inner.describe(index)

    def _fingerprint_items(self):
        return [self.inner.fingerprint()]


@pytest.fixture()
def counted(image_folder):
    return Counting(create_dataset(str(image_folder)))


def _cache(path, **kw):
    return EmbeddingCache(path, progress=False, chunk_size=5, batch_size=4, **kw)


def test_views_decode_each_image_once_and_subsets_read_the_root(tiny_vit, counted, tmp_path):
    n = len(counted)
    cache = _cache(tmp_path / "c")
    views = cache.image_views(tiny_vit, counted, ["none", "hflip"])
    assert set(views) == {"none", "hflip"}
    assert dict(counted.calls) == {i: 1 for i in range(n)}  # each image decoded exactly once
    assert cache.stats.images_encoded == 2 * n and cache.stats.images_decoded == n

    again = cache.image_views(tiny_vit, counted, ["hflip", "none"])
    assert cache.stats.images_encoded == 2 * n and cache.stats.images_decoded == n
    np.testing.assert_array_equal(again["hflip"].features, views["hflip"].features)

    idx = [7, 2, 2, 9]  # out of order, with a repeat
    fresh = _cache(tmp_path / "c")  # a new process on the same folder
    sub = fresh.image_views(tiny_vit, counted.subset(idx), ["none", "hflip"])
    assert fresh.stats.images_encoded == 0 and fresh.stats.images_decoded == 0
    for name in ("none", "hflip"):
        np.testing.assert_array_equal(sub[name].features, views[name].features[idx])
    nested = counted.subset([1, 3, 5, 7]).subset([3, 0])
    np.testing.assert_array_equal(fresh.image_features(tiny_vit, nested).features, views["none"].features[[7, 1]])
    assert fresh.stats.images_encoded == 0 and sum(counted.calls.values()) == n


def test_subset_first_then_full_encodes_only_the_rest(tiny_vit, counted, tmp_path):
    n, first, second = len(counted), [0, 4, 5], [4, 5, 6, 11]
    cache = _cache(tmp_path / "c")
    cache.image_views(tiny_vit, counted.subset(first), ["none", "hflip"])
    assert cache.stats.images_encoded == 2 * len(first)
    cache.image_views(tiny_vit, counted.subset(second), ["none", "hflip"])  # two subsets share rows
    assert cache.stats.images_encoded == 2 * len(set(first) | set(second))
    full = cache.image_views(tiny_vit, counted, ["none", "hflip"])
    assert cache.stats.images_encoded == 2 * n
    assert dict(counted.calls) == {i: 1 for i in range(n)}
    # rows encoded in different batches and orders equal a cold full run
    cold = _cache(None, enabled=False).image_views(tiny_vit, counted, ["none", "hflip"])
    for name in ("none", "hflip"):
        np.testing.assert_allclose(full[name].features, cold[name].features, atol=2e-3)
    entry = next((tmp_path / "c" / "image").iterdir())
    assert (entry / "data.npy").is_file() and not (entry / "chunks").exists()  # consolidated once complete


def test_views_equal_a_direct_computation(tiny_vit, image_folder, tmp_path):
    ds = create_dataset(str(image_folder))
    views = _cache(tmp_path / "c", dtype="float32").image_views(tiny_vit, ds, ["none", "hflip", "rot:15"])
    x = torch.stack([tiny_vit.preprocess(ds.load_image(i)) for i in range(len(ds))])
    for name, feats in views.items():
        with torch.no_grad():
            want = tiny_vit.encode_image(get_perturbation(name)(x), normalize=True).numpy()
        np.testing.assert_allclose(feats.features, want, atol=1e-5)
        assert feats.valid.all()


def test_partial_entry_is_rebuilt_from_chunks_and_a_corrupt_chunk_is_recomputed(tiny_vit, counted, tmp_path):
    cache = _cache(tmp_path / "c")
    part = cache.image_features(tiny_vit, counted.subset(range(7)))
    (entry,) = (tmp_path / "c" / "image").iterdir()
    chunks = sorted((entry / "chunks").glob("*.npz"))
    assert len(chunks) == 2 and not (entry / "data.npy").exists()  # 7 rows in chunks of 5: not consolidated
    chunks[1].write_bytes(chunks[1].read_bytes()[:40])  # truncate the chunk holding rows 5 and 6
    other = _cache(tmp_path / "c")
    again = other.image_features(tiny_vit, counted.subset(range(7)))
    assert other.stats.images_encoded == 2 and other.stats.healed == 1  # only the rows of the broken chunk
    assert not chunks[1].exists() or chunks[1].stat().st_size > 40  # deleted, then written again
    np.testing.assert_allclose(again.features, part.features, atol=2e-3)


def test_unreadable_image_is_skipped_in_every_view_with_subset_positions(tiny_vit, image_folder, tmp_path):
    bad = image_folder / "green_leaf" / "broken.png"
    bad.write_bytes(b"not a png")
    ds = create_dataset(str(image_folder))
    k = ds.paths.index(bad)
    views = _cache(tmp_path / "c").image_views(tiny_vit, ds, ["none", "hflip"])
    for feats in views.values():
        assert np.flatnonzero(~feats.valid).tolist() == [k]
        assert [s["index"] for s in feats.skipped] == [str(k)] and feats.skipped[0]["item"] == str(bad)
    sub = _cache(tmp_path / "c").image_features(tiny_vit, ds.subset([0, k]))
    assert sub.valid.tolist() == [True, False] and sub.skipped[0]["index"] == "1"


def test_patch_tokens_and_pixels_come_from_one_decode(tiny_vit, counted, tmp_path):
    from analysis.concepts.pipeline import prepare_images

    cache = _cache(tmp_path / "c")
    cache.image_views(tiny_vit, counted, ["none"], patch_indices=[2, 3])
    assert dict(counted.calls) == {i: 1 for i in range(len(counted))}
    assert cache.stats.encoded == {"image": len(counted), "pixels": 2, "patch-tokens": 2}
    patches = cache.pixels_and_tokens(tiny_vit, counted, [3, 2])
    assert sum(counted.calls.values()) == len(counted)  # read back: nothing decoded again
    arrays, tensors = prepare_images(tiny_vit, [counted.inner.load_image(i) for i in (3, 2)])
    np.testing.assert_array_equal(patches.pixels, arrays)
    with torch.no_grad():
        np.testing.assert_allclose(patches.tokens, tiny_vit.patch_tokens(tensors).numpy(), atol=1e-5)
    cold = _cache(tmp_path / "d")
    cold.pixels_and_tokens(tiny_vit, counted, [5])
    assert counted.calls[5] == 2 and cold.stats.encoded == {"pixels": 1, "patch-tokens": 1}


def test_visual_prompts_equal_the_mean_of_normalised_variants(tiny_vit, tmp_path):
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, 255, (5, 3, 32, 32, 3), dtype=np.uint8)
    cache = _cache(tmp_path / "c")
    emb = cache.visual_prompts(tiny_vit, prompts)
    x = torch.stack([tiny_vit.preprocess(Image.fromarray(a)) for a in prompts.reshape(-1, 32, 32, 3)])
    with torch.no_grad():
        want = tiny_vit.encode_image(x, normalize=True).numpy().reshape(5, 3, -1).mean(axis=1)
    np.testing.assert_allclose(emb, want, atol=1e-5)
    again = _cache(tmp_path / "c")
    np.testing.assert_array_equal(again.visual_prompts(tiny_vit, prompts), emb)
    assert again.stats.encoded == {}


def test_every_kind_is_registered():
    assert set(KINDS.list()) == {"image", "patch-tokens", "pixels", "text", "text-raw", "visual-prompt",
                                 "lit-image", "lit-text"}
    for name in KINDS:
        kind = KINDS.get(name)
        assert kind.source in ("dataset", "items") and kind.name == name


def test_no_encoder_call_outside_the_cache():
    """The cache is the only encoder: no module outside analysis/cache and analysis/models calls one."""
    import re
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "analysis"
    pattern = re.compile(r"\.(encode_image|encode_text|encode_texts|patch_tokens|image_features|text_features)\(")
    bad = []
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg).as_posix()
        if rel.startswith(("cache/", "models/")):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = pattern.search(line)
            if m and not re.search(r"cache\.(lit_)?(image|text)_features\(", line):
                bad.append(f"{rel}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------------------------------------- non-finite
def _with_nan(model, param: str):
    """A copy of ``model`` with one weight set to NaN in place (and a weights hash that says so)."""
    from analysis.models.base import state_dict_sha256

    broken = copy.copy(model)
    broken.module = copy.deepcopy(model.module)
    with torch.no_grad():
        dict(broken.module.named_parameters())[param].view(-1)[0] = float("nan")
    broken.info = dataclasses.replace(model.info, weights_sha256=state_dict_sha256(broken.module))
    return broken


def test_nan_projection_raises_naming_model_and_first_image(tiny_vit, image_folder, tmp_path):
    ds = create_dataset(str(image_folder))
    broken = _with_nan(tiny_vit, "visual.proj")
    cache = _cache(tmp_path / "c")
    with pytest.raises(ClipauditError, match="clipaudit-tiny-vit") as err:
        cache.image_views(broken, ds, ["none", "hflip"])
    assert ds.describe(0) in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / "c").rglob("*.npz"))  # nothing non-finite was stored


def test_skip_bad_lists_non_finite_images_like_unreadable_ones(tiny_vit, image_folder, tmp_path):
    ds = create_dataset(str(image_folder))
    broken = _with_nan(tiny_vit, "visual.proj")
    views = _cache(tmp_path / "c", skip_bad=True).image_views(broken, ds, ["none", "hflip"])
    for feats in views.values():
        assert not feats.valid.any() and np.all(feats.features == 0)  # no NaN reaches a metric
        assert len(feats.skipped) == len(ds) and all("non-finite" in s["error"] for s in feats.skipped)


class NanOnWhite:
    """A model wrapper whose image embedding is NaN for (nearly) white images only."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode_image(self, images, *, normalize=True):
        out = self.model.encode_image(images, normalize=normalize).clone()
        out[images.mean(dim=(1, 2, 3)) > 1.5] = float("nan")
        return out


def test_only_the_bad_image_is_named_or_skipped(tiny_vit, image_folder, tmp_path):
    white = image_folder / "blue_sky" / "white.png"
    Image.new("RGB", (24, 24), (255, 255, 255)).save(white)
    ds = create_dataset(str(image_folder))
    k = ds.paths.index(white)
    model = NanOnWhite(tiny_vit)
    with pytest.raises(ClipauditError, match="non-finite") as err:
        _cache(tmp_path / "c").image_views(model, ds, ["none"])
    assert str(white) in str(err.value) and ds.describe(0) not in str(err.value)
    feats = _cache(tmp_path / "c", skip_bad=True).image_features(model, ds)
    assert np.flatnonzero(~feats.valid).tolist() == [k] and feats.skipped[0]["item"] == str(white)
    assert np.isfinite(feats.features).all()


def test_nan_text_projection_raises_naming_model_and_first_text(tiny_vit, tmp_path):
    broken = _with_nan(tiny_vit, "text_projection")
    with pytest.raises(ClipauditError, match="clipaudit-tiny-vit.*text 'a photo of a cat'"):
        _cache(tmp_path / "c", skip_bad=True).text_features(broken, ["a photo of a cat", "a dog"])
    with pytest.raises(ClipauditError, match="non-finite"):
        _cache(tmp_path / "c").text_features_raw(broken, ["a photo of a cat"])


# ---------------------------------------------------------------------------------------------- LiT towers
class FakeTowers:
    """Duck-typed LiT towers (no weights): image features are the first 1280 pixels, texts their lengths."""

    def __init__(self, nan_texts=()):
        self.nan_texts = set(nan_texts)
        self.image_batches = []

    def fingerprint(self):
        return "fake-towers"

    def image_features(self, images):
        self.image_batches.append(len(images))
        return images.flatten(1)[:, :1280].float()

    def text_features(self, texts):
        out = torch.tensor([[float(len(t))] * 384 for t in texts])
        out[[i for i, t in enumerate(texts) if t in self.nan_texts]] = float("nan")
        return out


class Interrupting(Counting):
    """Raises KeyboardInterrupt (once) when image ``at`` is read."""

    def __init__(self, inner, at):
        super().__init__(inner)
        self.at = at

    def load_image(self, index):
        if index == self.at and self.at is not None:
            self.at = None
            raise KeyboardInterrupt
        return super().load_image(index)


def test_lit_image_features_resume_after_interrupt_and_match_a_cold_run(image_folder, tmp_path):
    from analysis.models.lit import lit_transform

    ds = Interrupting(create_dataset(str(image_folder)), at=7)
    towers = FakeTowers()
    with pytest.raises(KeyboardInterrupt):
        _cache(tmp_path / "c").lit_image_features(towers, ds, image_size=32)
    assert sum(towers.image_batches) == 5  # the first chunk of 5 was encoded and saved
    resumed = _cache(tmp_path / "c")
    feats = resumed.lit_image_features(towers, ds, image_size=32)
    assert resumed.stats.encoded == {"lit-image": 7}  # only the rows after the saved chunk
    x = torch.stack([lit_transform(32)(ds.inner.load_image(i)) for i in range(len(ds))])
    np.testing.assert_array_equal(feats.features, x.flatten(1)[:, :1280].numpy())
    sub = _cache(tmp_path / "c").lit_image_features(towers, ds.subset([3, 9]), image_size=32)
    np.testing.assert_array_equal(sub.features, feats.features[[3, 9]])
    assert sum(towers.image_batches) == 12


def test_lit_tower_features_go_through_the_cache(image_folder, tmp_path, monkeypatch):
    from analysis.models import lit
    from analysis.train.captions import caption_pool
    from analysis.train.features import lit_text_features, lit_tower_features

    bad = image_folder / "red_apple" / "broken.png"
    bad.write_bytes(b"not a png")
    ds = create_dataset(str(image_folder))
    k = ds.paths.index(bad)
    towers = FakeTowers(nan_texts=["a broken caption"])
    monkeypatch.setattr(lit, "get_towers", lambda device="cpu": towers)
    pool = caption_pool(ds, ["a photo of a {}.", "a {}"])
    cache = _cache(tmp_path / "c")
    feats = lit_tower_features(ds, pool, cache=cache, image_size=32, progress=False)
    assert feats.pool.counts[k] == 0 and (feats.pool.counts[np.arange(len(ds)) != k] > 0).all()
    assert np.all(feats.image[k] == 0) and np.isfinite(feats.image).all()
    np.testing.assert_array_equal(feats.text[:, 0], [len(t) for t in pool.texts])
    again = lit_tower_features(ds, pool, cache=_cache(tmp_path / "c"), image_size=32, progress=False)
    assert again.fingerprint == feats.fingerprint and sum(towers.image_batches) == len(ds) - 1
    with pytest.raises(ClipauditError, match="text 'a broken caption'"):
        lit_text_features(["fine", "a broken caption"], cache=cache)
