"""InfoNCE and SigLIP losses against the papers' formulas computed by hand in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis._checks import ClipauditError
from analysis.models.lit import LitHeads
from analysis.train.loop import _open_clip_cfg
from analysis.train.losses import (
    LogitScale,
    clamp_logit_scale_,
    create_loss,
    infonce_loss,
    multi_positive_targets,
    siglip_loss,
)


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def _log_softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def _infonce_numpy(img: np.ndarray, txt: np.ndarray, scale: float, targets: np.ndarray) -> float:
    logits = scale * img @ txt.T
    rows = -(targets * _log_softmax(logits)).sum(axis=1).mean()
    cols = -(targets.T * _log_softmax(logits.T)).sum(axis=1).mean()
    return (rows + cols) / 2


def test_infonce_matches_formula():
    img, txt = _unit(6, 4, 0), _unit(6, 4, 1)
    expected = _infonce_numpy(img.numpy(), txt.numpy(), 14.3, np.eye(6))
    assert float(infonce_loss(img, txt, 14.3)) == pytest.approx(expected, rel=1e-10)


def test_infonce_hand_worked_two_pairs():
    # orthogonal unit vectors, scale 1: logits = identity, each row softmax gives e / (e + 1) to the match
    img = torch.eye(2, dtype=torch.float64)
    expected = -math.log(math.e / (math.e + 1))
    assert float(infonce_loss(img, img.clone(), 1.0)) == pytest.approx(expected, rel=1e-12)


def test_multi_positive_targets_and_loss():
    labels = torch.tensor([0, 1, 0, -1, 1, 0])
    t = multi_positive_targets(labels, labels).numpy()
    expected = np.zeros((6, 6))
    for i in range(6):
        pos = [j for j in range(6) if j == i or (labels[i] >= 0 and labels[j] == labels[i])]
        expected[i, pos] = 1 / len(pos)
    np.testing.assert_allclose(t, expected)
    img, txt = _unit(6, 5, 2), _unit(6, 5, 3)
    ref = _infonce_numpy(img.numpy(), txt.numpy(), 7.0, expected)
    assert float(infonce_loss(img, txt, 7.0, class_labels=labels)) == pytest.approx(ref, rel=1e-10)


def test_multi_positive_with_distinct_labels_is_plain_infonce():
    img, txt = _unit(5, 3, 4), _unit(5, 3, 5)
    plain = infonce_loss(img, txt, 10.0)
    torch.testing.assert_close(infonce_loss(img, txt, 10.0, class_labels=torch.arange(5)), plain)
    torch.testing.assert_close(infonce_loss(img, txt, 10.0, class_labels=torch.full((5,), -1)), plain)


def test_siglip_matches_formula():
    img, txt = _unit(5, 4, 6), _unit(5, 4, 7)
    t, b = 10.0, -10.0
    logits = t * img.numpy() @ txt.numpy().T + b
    z = 2 * np.eye(5) - 1
    expected = -np.log(1 / (1 + np.exp(-z * logits))).sum() / 5
    assert float(siglip_loss(img, txt, t, b)) == pytest.approx(expected, rel=1e-10)


def test_siglip_init_values():
    heads = LitHeads(3, loss="siglip", image_dim=4, text_dim=4)
    assert heads.logit_scale.item() == pytest.approx(math.log(10))
    assert heads.logit_bias.item() == pytest.approx(-10)
    cfg = _open_clip_cfg("clipaudit-tiny-vit", "siglip")
    assert cfg["init_logit_scale"] == pytest.approx(math.log(10)) and cfg["init_logit_bias"] == -10
    clip_heads = LitHeads(3, image_dim=4, text_dim=4)
    assert float(clip_heads.scale()) == pytest.approx(1 / 0.07, rel=1e-6)
    assert clip_heads.logit_bias is None


@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_gradients_finite_and_loss_decreases(loss):
    torch.manual_seed(0)
    x, y = torch.randn(16, 8), torch.randn(16, 6)  # 16 random pairs: learnable by two linear maps
    heads = LitHeads(8, loss=loss, image_dim=8, text_dim=6)
    fn = create_loss(loss)
    opt = torch.optim.Adam(heads.parameters(), lr=0.05)
    losses = []
    for _ in range(40):
        img, txt, scale, bias = heads(x, y)
        value = fn(img, txt, scale, bias)
        opt.zero_grad()
        value.backward()
        assert all(torch.isfinite(p.grad).all() for p in heads.parameters())
        opt.step()
        clamp_logit_scale_(heads.logit_scale)
        losses.append(float(value))
    assert losses[-1] < 0.5 * losses[0]


def test_temperature_clamped_at_100():
    scale = LogitScale()
    opt = torch.optim.SGD(scale.parameters(), lr=1.0)
    for _ in range(10):
        opt.zero_grad()
        (-scale()).backward()  # pushes the scale up
        opt.step()
        scale.clamp_()
        assert float(scale.log_scale) <= math.log(100) + 1e-6
        assert float(scale()) <= 100 + 1e-4
    assert float(scale()) == pytest.approx(100, rel=1e-5)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)  # a parameter past the bound: forward still clamps
    assert float(scale()) == pytest.approx(100, rel=1e-5)


def test_loss_errors_name_the_problem():
    with pytest.raises(ClipauditError, match="loss='clip'.*infonce"):
        create_loss("clip")
    with pytest.raises(ClipauditError, match="multi_positive"):
        create_loss("siglip", multi_positive=True)
    with pytest.raises(ClipauditError, match="bias"):
        create_loss("siglip")(_unit(2, 2, 0), _unit(2, 2, 1), torch.tensor(10.0))
