"""Model sources: tiny open_clip configs, checkpoint files, local-dir folders, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from analysis import ClipauditError
from analysis.models import load_model


def _embed(model, n=2):
    imgs = torch.stack([model.preprocess(Image.new("RGB", (40, 40), (i * 60, 10, 200))) for i in range(n)])
    with torch.no_grad():
        return model.encode_image(imgs).numpy(), model.encode_texts(["a red apple", "a dog"]).numpy()


@pytest.mark.parametrize("fixture, grid, width", [("tiny_vit", 16, 64), ("tiny_rn", 4, 512)])
def test_tiny_models_interface(request, fixture, grid, width):
    model = request.getfixturevalue(fixture)
    img, txt = _embed(model)
    assert img.shape == (2, 32) and txt.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, rtol=1e-5)
    size = model.preprocess(Image.new("RGB", (10, 10))).shape[-1]
    tokens = model.patch_tokens(torch.zeros(3, 3, size, size))
    assert tokens.shape == (3, grid, width)
    assert model.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)
    assert model.logit_bias is None
    assert len(model.info.weights_sha256) == 64


def test_vit_patch_tokens_drop_cls_and_come_before_final_norm(tiny_vit):
    """Tokens are the last block's output minus CLS: ln_post + proj of the CLS token gives the embedding."""
    visual = tiny_vit.module.visual
    x = torch.randn(2, 3, 32, 32)
    captured = {}
    h = visual.transformer.resblocks[-1].register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    with torch.no_grad():
        emb = tiny_vit.module.encode_image(x)
    h.remove()
    full = captured["o"]
    np.testing.assert_allclose(tiny_vit.patch_tokens(x).numpy(), full[:, 1:].numpy(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        cls = visual.ln_post(full[:, 0]) @ visual.proj
    np.testing.assert_allclose(cls.numpy(), emb.numpy(), rtol=1e-4, atol=1e-5)


def test_random_init_is_seeded():
    a, b = load_model("clipaudit-tiny-vit"), load_model("clipaudit-tiny-vit")
    assert a.info.weights_sha256 == b.info.weights_sha256


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_file_round_trip(tmp_path, suffix):
    from analysis.models import state_dict_sha256

    tiny_vit = load_model("clipaudit-tiny-vit")
    module = tiny_vit.module
    with torch.no_grad():  # make the weights differ from the seeded random init
        module.text_projection.mul_(1.5)
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": module.state_dict(), "epoch": 3}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    loaded = load_model("clipaudit-tiny-vit", str(path))
    for a, b in zip(_embed(tiny_vit), _embed(loaded)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert loaded.info.weights_sha256 == state_dict_sha256(module) != tiny_vit.info.weights_sha256
    assert loaded.info.source == "open_clip-checkpoint"


def test_local_dir_round_trip(tmp_path, tiny_rn):
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path / "my-model"
    folder.mkdir()
    cfg = {"model_cfg": open_clip.get_model_config("clipaudit-tiny-rn"), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    save_file(dict(tiny_rn.module.state_dict()), str(folder / "open_clip_model.safetensors"))
    for spec in (f"local-dir:{folder}", str(folder)):
        loaded = load_model(spec)
        for a, b in zip(_embed(tiny_rn), _embed(loaded)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mismatched_checkpoint_gives_one_clear_error(tmp_path, tiny_rn):
    path = tmp_path / "rn.pt"
    torch.save(tiny_rn.module.state_dict(), path)
    with pytest.raises(ClipauditError, match=r"does not match model config 'clipaudit-tiny-vit'.*keys"):
        load_model("clipaudit-tiny-vit", str(path))


def test_local_dir_with_wrong_weights(tmp_path, tiny_rn):
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path / "bad"
    folder.mkdir()
    cfg = {"model_cfg": open_clip.get_model_config("clipaudit-tiny-vit")}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    save_file(dict(tiny_rn.module.state_dict()), str(folder / "open_clip_model.safetensors"))
    with pytest.raises(ClipauditError, match="do not match"):
        load_model(f"local-dir:{folder}")


def test_pickled_objects_are_refused(tmp_path):
    """weights_only=True: a checkpoint holding arbitrary Python objects is not unpickled."""

    import fractions

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": fractions.Fraction(1, 3)}}, path)
    with pytest.raises(ClipauditError, match=r"cannot be loaded safely .*fractions\.Fraction.*must be a safetensors "
                                             r"file or a checkpoint that torch\.load\(weights_only=True\) can read"):
        load_model("clipaudit-tiny-vit", str(path))


def test_unknown_names_suggest_close_matches():
    with pytest.raises(ClipauditError, match="Did you mean 'clipaudit-tiny-vit'"):
        load_model("clipaudit-tiny-vt")
    with pytest.raises(ClipauditError, match="Unknown pretrained tag"):
        load_model("clipaudit-tiny-vit", "laion9000")
    with pytest.raises(ClipauditError, match="does not exist"):
        load_model("clipaudit-tiny-vit", "missing/ckpt.pt")


def test_pretrained_tag_without_network_is_a_clear_error(monkeypatch):
    import open_clip

    def offline(*a, **k):
        raise RuntimeError("Failed to download weights: no network")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)
    with pytest.raises(ClipauditError, match="Could not load pretrained weights ViT-B-32:openai"):
        load_model("ViT-B-32", "openai")
