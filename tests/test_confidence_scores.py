"""The confidence-score registry: columns, summary rows, run-JSON properties and the report all follow it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analysis._checks import ClipauditError
from analysis.confidence import (
    SCORES,
    confidence_summary,
    register_score,
    registered_scores,
    score_properties,
    self_consistency_table,
    unregister_score,
)
from analysis.selective import correctness_auroc

PROPERTY_KEYS = {"description", "prediction", "is_probability", "higher_is_more_confident", "in_figures",
                 "softmax_scaled"}


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _problem(seed=0, n=60, t=6, c=5, d=8):
    rng = np.random.default_rng(seed)
    base = _unit(rng.normal(size=(c, d)))
    per_template = _unit(base[None] + 0.5 * rng.normal(size=(t, c, d)))
    labels = rng.integers(0, c, n)
    feats = _unit(base[labels] + 0.9 * rng.normal(size=(n, d)))
    flip = _unit(feats + 0.3 * rng.normal(size=feats.shape))
    return feats, per_template, base, labels, flip


def _entropy(x):
    p = np.exp(x.msp_scale * (x.name_only_cosine - x.name_only_cosine.max(1, keepdims=True)))
    p /= p.sum(1, keepdims=True)
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(1)


@pytest.fixture()
def entropy_score():
    """A score registered by the test only: lower entropy = more confident, not a probability."""
    entry = register_score("entropy_name_only", _entropy, description="softmax entropy, name-only classifier",
                           prediction="name_only", is_probability=False, higher_is_more_confident=False,
                           in_figures=True)
    yield entry
    unregister_score("entropy_name_only")
    assert "entropy_name_only" not in score_properties()


def test_every_registered_score_is_a_column_and_a_summary_row():
    feats, per_template, name, labels, flip = _problem()
    t = self_consistency_table(feats, per_template, name, perturbed={"hflip": flip}, labels=labels, msp_scale=30.0)
    metrics, tables = confidence_summary(t, target_accuracy=0.5, n_boot=20)
    names = [s.name for s in registered_scores()]
    assert names[:4] == ["S_T", "S_B", "S_TB", "consistent"]
    assert set(names) <= set(t.columns) and t.attrs["score_columns"] == names
    assert tables["scores"]["score"].tolist() == names  # registration order
    for s in registered_scores():
        assert tables["scores"].set_index("score").loc[s.name, "prediction"] == s.prediction
        assert f"auroc_{s.name}" in metrics and f"ece_{s.name}" in metrics
        assert math.isnan(metrics[f"ece_{s.name}"]) == (not s.is_probability)
    # the registry's functions reproduce the former hard-wired columns
    np.testing.assert_allclose(t["consistent"], 1.0 - t["in_O"].astype(float))
    np.testing.assert_allclose(t["S_TB"], (t["S_T"] + t["S_B"]) / 2)
    assert dict(SCORES) == {s.name: (s.prediction, s.description) for s in registered_scores()}


def test_a_score_registered_in_a_test_shows_up_everywhere(entropy_score):
    feats, per_template, name, labels, flip = _problem(seed=1, n=80)
    t = self_consistency_table(feats, per_template, name, perturbed={"hflip": flip}, labels=labels, msp_scale=20.0)
    cos = feats @ name.T
    p = np.exp(20.0 * (cos - cos.max(1, keepdims=True)))
    p /= p.sum(1, keepdims=True)
    direct = -(p * np.log(p)).sum(1)
    np.testing.assert_allclose(t["entropy_name_only"], direct, rtol=1e-4, atol=1e-6)

    metrics, tables = confidence_summary(t, target_accuracy=0.5, n_boot=20)
    correct = t["correct_name_only"].to_numpy(bool)
    row = tables["scores"].set_index("score").loc["entropy_name_only"]
    # lower = more confident: ranked by -entropy, so AUROC is that of the negated score
    assert row["auroc"] == pytest.approx(correctness_auroc(-direct, correct), abs=1e-6)
    assert metrics["auroc_entropy_name_only"] == row["auroc"] and math.isnan(row["ece"])
    thr = tables["thresholds"].set_index("score").loc["entropy_name_only"]
    assert thr["keep_when"] == "score <= threshold"
    if thr["achievable"]:  # the threshold is on the score's own scale
        kept = t["entropy_name_only"].to_numpy() <= thr["threshold"]
        assert kept.sum() == thr["n_kept"] and correct[kept].mean() == pytest.approx(thr["accuracy"])
    curve = tables["risk_coverage"]
    assert (curve[curve.score == "entropy_name_only"]["threshold"].diff().dropna() >= 0).all()  # ascending
    assert score_properties()["entropy_name_only"]["higher_is_more_confident"] is False


def test_score_properties_round_trip_through_json():
    props = score_properties()
    assert list(props) == [s.name for s in registered_scores()]
    assert all(set(p) == PROPERTY_KEYS for p in props.values())
    assert json.loads(json.dumps(props)) == props
    assert props["msp_ensemble"]["prediction"] == "ensemble" and props["max_logit_name_only"]["is_probability"] is False
    assert list(score_properties(["msp_ensemble", "S_T"])) == ["S_T", "msp_ensemble"]


def test_registration_errors_name_what_is_accepted():
    with pytest.raises(ClipauditError, match="Did you mean 'ensemble'"):
        register_score("x1", lambda x: x.s_t, description="", prediction="ensembel", is_probability=False)
    with pytest.raises(ClipauditError, match="needs higher_is_more_confident=True"):
        register_score("x2", lambda x: x.s_t, description="", prediction="name_only", is_probability=True,
                       higher_is_more_confident=False)
    with pytest.raises(ClipauditError, match="collides with a column"):
        register_score("pred_x", lambda x: x.s_t, description="", prediction="name_only", is_probability=False)
    with pytest.raises(ClipauditError, match="Unknown confidence score 'S_X'"):
        unregister_score("S_X")
    assert not {"x1", "x2", "pred_x"} & set(score_properties())


def test_a_score_of_the_wrong_shape_is_refused():
    feats, per_template, name, labels, _ = _problem()
    register_score("bad_shape", lambda x: x.s_t[:3], description="", prediction="name_only", is_probability=False)
    try:
        with pytest.raises(ClipauditError, match="'bad_shape' returned shape"):
            self_consistency_table(feats, per_template, name, labels=labels)
    finally:
        unregister_score("bad_shape")


def _section(record, tables):
    from analysis.report.sections_confidence import confidence_section

    return confidence_section(record, tables, None)


def _run_record(t, **extra):
    metrics, tables = confidence_summary(t, target_accuracy=0.5, n_boot=20)
    record = {"metrics": metrics, "perturbations": ["hflip"], "templates": "toy", "n_templates": 6,
              "msp_scale": 30.0, **extra}
    return record, {**tables, "per_sample": t}


def test_report_reads_score_properties_from_the_record(entropy_score):
    feats, per_template, name, labels, flip = _problem(seed=2, n=80)
    t = self_consistency_table(feats, per_template, name, perturbed={"hflip": flip}, labels=labels, msp_scale=30.0)
    props = json.loads(json.dumps(score_properties()))  # as read back from the run JSON
    for p in props.values():
        p["in_figures"] = False
    props["max_logit_name_only"]["in_figures"] = True
    record, tables = _run_record(t, scores=props)
    blocks = _section(record, tables)
    roc = next(b for b in blocks if b.get("caption", "").startswith("ROC"))
    assert set(roc["data"]) == {"max_logit_name_only"}  # only what the record says, not a list of its own
    assert not any(b.get("caption", "").startswith("reliability") for b in blocks)  # not a probability

    # the record's properties also decide the direction: the registered entropy is drawn as -entropy
    from sklearn.metrics import roc_curve

    props["entropy_name_only"]["in_figures"] = True
    record, tables = _run_record(t, scores=props)
    roc = next(b for b in _section(record, tables) if b.get("caption", "").startswith("ROC"))
    fpr, tpr, _ = roc_curve(t["correct_name_only"].astype(bool), -t["entropy_name_only"])
    np.testing.assert_allclose(roc["data"]["entropy_name_only"]["fpr"], fpr)
    np.testing.assert_allclose(roc["data"]["entropy_name_only"]["tpr"], tpr)
    summary = next(b for b in _section(record, tables) if b.get("caption", "").startswith("every score"))
    col = summary["columns"].index("higher = more confident")
    by_name = {r[0]: r[col] for r in summary["rows"]}
    assert by_name["entropy_name_only"] is False and by_name["S_T"] is True


def test_report_of_an_old_record_falls_back_to_the_registry():
    feats, per_template, name, labels, flip = _problem(seed=3)
    t = self_consistency_table(feats, per_template, name, perturbed={"hflip": flip}, labels=labels, msp_scale=30.0)
    record, tables = _run_record(t, labelled_prediction={n: p for n, (p, _) in SCORES.items()})
    roc = next(b for b in _section(record, tables) if b.get("caption", "").startswith("ROC"))
    assert set(roc["data"]) == {s.name for s in registered_scores() if s.in_figures}
