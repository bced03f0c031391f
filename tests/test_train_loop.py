"""Trainer: captions, LiT on cached features, resume, and a from-scratch train -> save -> load -> zero-shot."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from analysis._checks import ClipauditError
from analysis.data.base import ImageDataset, hash_items
from analysis.models.lit import LitHeads
from analysis.train import LitFeatures, TrainConfig, latest_checkpoint, train_lit, train_open_clip
from analysis.train.captions import caption_pool, caption_pool_from_classes, class_captions

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


class ColourSquares(ImageDataset):
    """Noisy solid-colour images, one class per colour (built in the test, no files)."""

    def __init__(self, n_per_class: int = 8, broken: tuple[int, ...] = ()) -> None:
        self.name = "colours"
        self.classnames = list(COLOURS)
        self.labels = np.repeat(np.arange(3), n_per_class).astype(np.int64)
        self.broken = set(broken)

    def load_image(self, index: int) -> Image.Image:
        if index in self.broken:
            raise OSError("truncated file")
        rng = np.random.default_rng(index)
        base = np.array(COLOURS[self.classnames[self.labels[index]]], dtype=np.float64)
        pixels = np.clip(base + rng.normal(0, 25, size=(32, 32, 3)), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, "RGB")

    def describe(self, index: int) -> str:
        return f"colours[{index}]"

    def _fingerprint_items(self):
        return [len(self.labels)]


# ------------------------------------------------------------------------------------------- captions
def test_class_captions_templates_synonyms_kind_of():
    caps = class_captions(["sneaker", "bag"], ["a photo of a {}.", "{c}"], synonyms={"sneaker": ["trainer"]},
                          kind_of={"sneaker": ["footwear"]})
    assert caps[0] == ["a photo of a sneaker.", "sneaker", "a photo of a trainer.", "trainer",
                       "a photo of a sneaker, a kind of footwear.", "sneaker, a kind of footwear"]
    assert caps[1] == ["a photo of a bag.", "bag"]
    with pytest.raises(ClipauditError, match="synonyms.*'shoe'"):
        class_captions(["sneaker"], ["{}"], synonyms={"shoe": ["x"]})
    with pytest.raises(ClipauditError, match="placeholder"):
        class_captions(["sneaker"], ["a photo"])


def test_caption_pool_draws_own_class_reproducibly():
    labels = np.array([1, 0, 1, -1, 0])
    pool = caption_pool_from_classes(labels, [["a0", "a1"], ["b0", "b1", "b2"]])
    assert pool.counts.tolist() == [3, 2, 3, 0, 2] and pool.candidates(0) == ["b0", "b1", "b2"]
    for epoch in range(5):
        ids = pool.sample(seed=3, epoch=epoch)
        for i in np.flatnonzero(pool.counts):
            assert pool.texts[ids[i]] in pool.candidates(i)
        np.testing.assert_array_equal(ids, pool.sample(seed=3, epoch=epoch))


def test_caption_pool_needs_captions_or_templates():
    with pytest.raises(ClipauditError, match="no captions"):
        caption_pool(ColourSquares(2))


# ------------------------------------------------------------------------------------------------ LiT
def _lit_features(n_per_class: int = 20, seed: int = 0) -> LitFeatures:
    """Image features = class prototype + noise; text features = another view of the same prototypes."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    protos = rng.normal(size=(3, 6))
    image = protos[labels] + 0.3 * rng.normal(size=(len(labels), 6))
    pool = caption_pool_from_classes(labels, [[f"c{c} t{t}" for t in range(2)] for c in range(3)])
    mix = rng.normal(size=(6, 5))
    text = np.stack([protos[int(s[1])] @ mix for s in pool.texts]) + 0.1 * rng.normal(size=(len(pool.texts), 5))
    return LitFeatures(image.astype(np.float32), text.astype(np.float32), pool, labels, hash_items("toy", seed))


def _heads(loss: str = "infonce") -> LitHeads:
    torch.manual_seed(0)
    return LitHeads(4, loss=loss, image_dim=6, text_dim=5)


@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_lit_trains_logs_and_saves(tmp_path, loss):
    feats = _lit_features()
    saved = {}
    config = TrainConfig(loss=loss, multi_positive=loss == "infonce", epochs=8, batch_size=12, lr=0.05)
    heads = _heads(loss)
    result = train_lit(lambda: feats, heads, tmp_path, config=config, progress=False,
                       save_fn=lambda h, folder, meta: saved.update(folder=folder, meta=meta))
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 8 * 5 + 1)) == list(range(1, result.steps + 1))
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert all(float(r["logit_scale"]) <= 100 + 1e-4 for r in rows)
    assert (rows[0]["logit_bias"] == "") == (loss == "infonce")
    assert saved["folder"] == tmp_path and saved["meta"]["data_fingerprint"] == feats.fingerprint
    ckpt = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert ckpt["step"] == 40 and ckpt["config"]["loss"] == loss
    # the trained heads classify: each image's nearest class (mean caption embedding) is its own
    with torch.no_grad():
        img, txt, _, _ = heads(torch.as_tensor(feats.image), torch.as_tensor(feats.text))
    class_emb = torch.stack([txt[torch.as_tensor(feats.pool.starts[feats.labels == c][0]) + torch.arange(2)].mean(0)
                             for c in range(3)])
    accuracy = float(((img @ class_emb.T).argmax(1).numpy() == feats.labels).mean())
    assert accuracy > 0.9


def test_resume_errors(tmp_path):
    feats = _lit_features()
    config = TrainConfig(max_steps=4, batch_size=12, lr=0.05)
    train_lit(lambda: feats, _heads(), tmp_path / "b", config=config, progress=False)
    with pytest.raises(ClipauditError, match="already has checkpoints"):
        train_lit(lambda: feats, _heads(), tmp_path / "b", config=config, progress=False)
    with pytest.raises(ClipauditError, match="lr: checkpoint 0.05 vs now 0.01"):
        train_lit(lambda: feats, _heads(), tmp_path / "b", config=TrainConfig(**{**config.as_dict(), "lr": 0.01}),
                  resume=True, progress=False)
    other = _lit_features(seed=1)
    with pytest.raises(ClipauditError, match="other data"):
        train_lit(lambda: other, _heads(), tmp_path / "b", config=config, resume=True, progress=False)
    with pytest.raises(ClipauditError, match="no checkpoint"):
        train_lit(lambda: feats, _heads(), tmp_path / "c", config=config, resume=True, progress=False)


def test_resume_after_crash_matches(tmp_path):
    """Kill a run's last checkpoint (as if it crashed after step 6 of 10): resuming gives the same weights."""
    feats = _lit_features()
    config = TrainConfig(epochs=2, batch_size=12, lr=0.05, checkpoint_every=3, keep_checkpoints=5,
                         multi_positive=True)
    full = _heads()
    train_lit(lambda: feats, full, tmp_path, config=config, progress=False)
    for name in ("step_00000009.pt", "step_00000010.pt"):
        (tmp_path / "checkpoints" / name).unlink()
    log_before = (tmp_path / "train_log.csv").read_text()
    resumed = _heads()
    result = train_lit(lambda: feats, resumed, tmp_path, config=config, resume=True, progress=False)
    assert result.steps == 10
    for key, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)
    assert (tmp_path / "train_log.csv").read_text() == log_before


def test_lit_rejects_misaligned_features(tmp_path):
    feats = _lit_features()
    bad = LitFeatures(feats.image[:-1], feats.text, feats.pool, feats.labels, feats.fingerprint)
    with pytest.raises(ClipauditError, match="do not line up"):
        train_lit(lambda: bad, _heads(), tmp_path, progress=False)


# ----------------------------------------------------------------------------------- from scratch
def test_scratch_train_save_load_zero_shot(tmp_path):
    from analysis.models import load_model

    data = ColourSquares(8, broken=(5,))
    templates = ["a photo of a {} square.", "a {} image."]
    pool = caption_pool(data, templates)
    config = TrainConfig(epochs=12, batch_size=8, lr=2e-3, weight_decay=0.0, multi_positive=True, seed=1)
    result = train_open_clip(data, pool, tmp_path, model_name="clipaudit-tiny-vit", config=config, progress=False)
    assert result.steps == 12 * 3 and result.skipped == ["colours[5]"]
    assert {"open_clip_config.json", "open_clip_model.safetensors", "training.json"} <= {
        p.name for p in tmp_path.iterdir()}
    model = load_model(str(tmp_path))
    # the loaded weights are the trained ones
    ckpt = torch.load(latest_checkpoint(tmp_path), weights_only=True)["model"]
    for key, value in model.module.state_dict().items():
        torch.testing.assert_close(value, ckpt[f"clip.{key}"])
    assert math.isclose(model.logit_scale, math.exp(float(ckpt["clip.logit_scale"])), rel_tol=1e-6)
    meta = json.loads((tmp_path / "training.json").read_text())
    assert meta["steps"] == 36 and meta["skipped_images"] == ["colours[5]"]
    # zero-shot on the (separable) training colours, with the training templates ensembled
    with torch.no_grad():
        images = torch.stack([model.preprocess(data.load_image(i)) for i in range(len(data)) if i != 5])
        feats = model.encode_image(images)
        weights = torch.nn.functional.normalize(torch.stack(
            [model.encode_texts([t.format(c) for t in templates]).mean(0) for c in data.classnames]), dim=-1)
    preds = (feats @ weights.T).argmax(1).numpy()
    accuracy = (preds == np.delete(data.labels, 5)).mean()
    assert accuracy > 2 / 3  # chance is 1/3


def test_scratch_siglip_saves_bias(tmp_path):
    from analysis.models import load_model

    data = ColourSquares(4)
    config = TrainConfig(loss="siglip", max_steps=2, batch_size=6, seed=0)
    train_open_clip(data, caption_pool(data, ["a {} square."]), tmp_path, config=config, progress=False)
    model = load_model(str(tmp_path))
    assert model.logit_bias is not None and abs(model.logit_bias + 10) < 0.1
    assert abs(model.logit_scale - 10) < 0.5
