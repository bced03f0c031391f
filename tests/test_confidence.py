"""Self-consistency confidence: hand-built embeddings with known answers, and direct computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis._checks import ClipauditError
from analysis.confidence import (
    classifier_outputs,
    confidence_summary,
    continuous_low_confidence,
    low_confidence_sets,
    prompt_sets,
    self_consistency_table,
    single_template_predictions,
)

E = np.eye(3)
SWAP = E[[1, 0, 2]]  # a template whose class 0 looks like e1 and class 1 like e0


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _hand_example():
    """3 classes embedded as e0, e1, e2 by their bare names; 5 templates: 3 identity, 2 swapping 0 and 1.

    Image A = e0: name-only 0; templates 0-2 say 0, templates 3-4 say 1 -> S_T = 3/5.
      T1 = templates {0,1,2} -> 0; T2 = {3,4} -> 1; T3 = all (class 0 ~ 3e0+2e1, class 1 ~ 2e0+3e1) -> 0;
      T4 = name -> 0: the sets disagree, A is in O_T. Its flip is itself: not in O_B.
    Image B = e2 + 0.1 e0: every classifier says 2 (S_T = 1, not in O_T); its flip is e1 -> name-only 1,
      so B is in O_B and S_B = 0.
    Image C = e2, flip e2: consistent everywhere.
    """
    per_template = np.stack([E, E, E, SWAP, SWAP])
    feats = _unit([[1, 0, 0], [0.1, 0, 1], [0, 0, 1]])
    flip = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    return feats, per_template, E, flip


def test_hand_built_example_S_T_S_B_and_O():
    feats, per_template, name, flip = _hand_example()
    t = self_consistency_table(
        feats, per_template, name, perturbed={"hflip": flip}, labels=np.array([0, 0, 2]),
        splits=[[0, 1, 2], [3, 4]], msp_scale=2.0, classnames=["a", "b", "c"],
    )
    np.testing.assert_array_equal(t["pred_name_only"], [0, 2, 2])
    np.testing.assert_array_equal(t[["pred_T1", "pred_T2", "pred_T3", "pred_T4"]].to_numpy(),
                                  [[0, 1, 0, 0], [2, 2, 2, 2], [2, 2, 2, 2]])
    np.testing.assert_array_equal(t["pred_hflip"], [0, 1, 2])
    np.testing.assert_allclose(t["S_T"], [0.6, 1.0, 1.0])
    np.testing.assert_allclose(t["S_B"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(t["S_TB"], [0.8, 0.5, 1.0])
    np.testing.assert_array_equal(t["in_O_T"], [True, False, False])
    np.testing.assert_array_equal(t["in_O_B"], [False, True, False])
    np.testing.assert_array_equal(t["in_O"], [True, True, False])
    np.testing.assert_array_equal(t["correct_name_only"].to_numpy(bool), [True, False, True])
    np.testing.assert_array_equal(t["pred_ensemble"], t["pred_T3"])
    # baselines: max cosine and softmax(2 * cosine) of the name-only classifier, by hand
    np.testing.assert_allclose(t["max_logit_name_only"], [1.0, 1 / math.sqrt(1.01), 1.0], rtol=1e-6)
    assert t["msp_name_only"][2] == pytest.approx(math.exp(2) / (math.exp(2) + 2))
    assert list(t["label_name"]) == ["a", "a", "c"] and t.attrs["msp_scale"] == 2.0


def test_no_perturbation_means_O_equals_O_T():
    feats, per_template, name, _ = _hand_example()
    t = self_consistency_table(feats, per_template, name, splits=[[0, 1, 2], [3, 4]])
    assert t["S_B"].isna().all() and not t["in_O_B"].any()
    np.testing.assert_array_equal(t["in_O"], t["in_O_T"])
    _, tables = confidence_summary(t, target_accuracy=None)
    assert "S_B" not in set(tables["scores"]["score"]) and len(tables["thresholds"]) == 0


def _random_problem(seed=0, n=23, t=7, c=5, d=8):
    rng = np.random.default_rng(seed)
    base = _unit(rng.normal(size=(c, d)))
    per_template = _unit(base[None] + 0.5 * rng.normal(size=(t, c, d)))
    labels = rng.integers(0, c, n)
    feats = _unit(base[labels] + 0.9 * rng.normal(size=(n, d)))
    return feats, per_template, base, labels, rng


def test_single_matmul_equals_loop_over_templates():
    feats, per_template, _, _, _ = _random_problem()
    loop = np.stack([(feats @ w.T).argmax(1) for w in per_template], axis=1)
    np.testing.assert_array_equal(single_template_predictions(feats, per_template), loop)
    # tiny chunks (one image per product) give the same answer
    np.testing.assert_array_equal(single_template_predictions(feats, per_template, max_elements=1), loop)


def test_S_T_counts_the_chosen_templates():
    feats, per_template, name, labels, _ = _random_problem(seed=1, n=40)
    ref = (feats @ name.T).argmax(1)
    chosen = [0, 2, 3, 6]
    direct = np.mean([(feats @ per_template[i].T).argmax(1) == ref for i in chosen], axis=0)
    t = self_consistency_table(feats, per_template, name, labels=labels, st_templates=chosen)
    np.testing.assert_allclose(t["S_T"], direct)
    assert t.attrs["st_templates"] == chosen


def test_sets_are_ensembles_and_O_T_is_any_disagreement():
    feats, per_template, name, labels, _ = _random_problem(seed=2, n=60, t=8)
    t = self_consistency_table(feats, per_template, name, labels=labels)
    preds = []
    for idx in (range(0, 4), range(4, 8), range(0, 8)):
        w = per_template[list(idx)].mean(0)
        preds.append((feats @ _unit(w).T).argmax(1))
    preds.append((feats @ name.T).argmax(1))
    direct = np.stack(preds, axis=1)
    np.testing.assert_array_equal(t[["pred_T1", "pred_T2", "pred_T3", "pred_T4"]].to_numpy(), direct)
    np.testing.assert_array_equal(t["in_O_T"], [len(set(row)) > 1 for row in direct])
    assert t["in_O_T"].any() and not t["in_O_T"].all()  # the example exercises both cases


def test_O_B_when_a_perturbation_changes_the_prediction():
    feats, per_template, name, labels, rng = _random_problem(seed=3, n=30)
    moved = feats.copy()
    moved[::2] = _unit(name[(labels[::2] + 1) % 5] + 0.05 * rng.normal(size=(15, 8)))
    t = self_consistency_table(feats, per_template, name, perturbed={"hflip": moved, "vflip": feats})
    ref = (feats @ name.T).argmax(1)
    changed = (moved @ name.T).argmax(1) != ref
    assert changed.sum() >= 10
    np.testing.assert_array_equal(t["in_O_B"], changed)
    np.testing.assert_allclose(t["S_B"], 1 - changed / 2)  # two perturbations, vflip never changes
    np.testing.assert_array_equal(t["in_O"], t["in_O_T"] | changed)


def test_low_confidence_sets_direct():
    sets = np.array([[1, 1, 1], [1, 2, 1], [0, 0, 0]])
    ref = np.array([1, 1, 0])
    pert = np.array([[1], [1], [2]])
    in_t, in_b, in_o = low_confidence_sets(sets, ref, pert)
    np.testing.assert_array_equal(in_t, [False, True, False])
    np.testing.assert_array_equal(in_b, [False, False, True])
    np.testing.assert_array_equal(in_o, [False, True, True])


def test_prompt_sets():
    sets = prompt_sets(80)
    assert list(sets) == ["T1", "T2", "T3"]
    np.testing.assert_array_equal(sets["T1"], np.arange(40))
    np.testing.assert_array_equal(sets["T2"], np.arange(40, 80))
    np.testing.assert_array_equal(sets["T3"], np.arange(80))
    quarters = prompt_sets(80, [0.25] * 4)
    assert [len(v) for v in quarters.values()] == [20, 20, 20, 20, 80]
    np.testing.assert_array_equal(quarters["T3"], np.arange(40, 60))
    custom = prompt_sets(10, [[0, 5], [9]], include_all=False)
    assert {k: v.tolist() for k, v in custom.items()} == {"T1": [0, 5], "T2": [9]}
    with pytest.raises(ClipauditError, match="sum to at most 1"):
        prompt_sets(80, [0.6, 0.6])
    with pytest.raises(ClipauditError, match="outside 0..9"):
        prompt_sets(10, [[0, 10]])
    with pytest.raises(ClipauditError, match="at least 2 templates"):
        prompt_sets(1)


def test_continuous_low_confidence():
    s = np.array([0.5, 0.2, 0.5, 0.9, 0.2])
    mask, thr = continuous_low_confidence(s, threshold=0.5)
    np.testing.assert_array_equal(mask, [False, True, False, False, True])
    assert thr == 0.5
    mask, thr = continuous_low_confidence(s, size=3)  # ties at 0.5: the lower index joins first
    np.testing.assert_array_equal(mask, [True, True, False, False, True])
    assert thr == 0.5
    with pytest.raises(ClipauditError, match="exactly one of threshold and size"):
        continuous_low_confidence(s)


def test_input_errors_name_the_argument():
    feats, per_template, name, _, _ = _random_problem()
    with pytest.raises(ClipauditError, match="name_only has 4 classes"):
        self_consistency_table(feats, per_template, name[:4])
    with pytest.raises(ClipauditError, match=r"perturbed\['hflip'\] has 3 rows"):
        self_consistency_table(feats, per_template, name, perturbed={"hflip": feats[:3]})
    with pytest.raises(ClipauditError, match="labels must be in -1..4"):
        self_consistency_table(feats, per_template, name, labels=np.full(len(feats), 7))
    with pytest.raises(ClipauditError, match="embedding size"):
        classifier_outputs(feats[:, :4], per_template)


def test_summary_tables_match_direct_computation():
    feats, per_template, name, labels, _ = _random_problem(seed=4, n=80)
    flip = _unit(feats + 0.3 * np.random.default_rng(9).normal(size=feats.shape))
    labels = labels.copy()
    labels[:5] = -1  # unlabelled rows are left out of every metric
    t = self_consistency_table(feats, per_template, name, perturbed={"hflip": flip}, labels=labels, msp_scale=50.0)
    metrics, tables = confidence_summary(t, target_accuracy=0.6, n_boot=30, low_size=10)
    lab = t[labels >= 0]
    correct = lab["correct_name_only"].to_numpy(bool)
    in_o = lab["in_O"].to_numpy(bool)
    sets = tables["sets"].set_index("set")
    assert sets.loc["O", "size"] == t["in_O"].sum()
    assert sets.loc["O", "accuracy_name_only_in"] == pytest.approx(correct[in_o].mean())
    assert sets.loc["O", "accuracy_name_only_out"] == pytest.approx(correct[~in_o].mean())
    assert metrics["n_labelled"] == 75 and metrics["acc_name_only"] == pytest.approx(correct.mean())
    assert sets.loc["S_T lowest 10 (<= {:g})".format(np.sort(t["S_T"])[9]), "size"] == 10
    scores = tables["scores"].set_index("score")
    assert scores.loc["max_logit_ensemble", "prediction"] == "ensemble"
    assert math.isnan(scores.loc["max_logit_name_only", "ece"])
    assert "softmax(50 x cosine)" == scores.loc["msp_name_only", "ece_input"]
    assert set(tables["thresholds"]["score"]) == set(scores.index)
    sel = tables["selective"]
    assert sel[(sel.score == "S_T") & (sel.coverage == 1.0)]["accuracy"].item() == pytest.approx(correct.mean())
    classes = tables["classes"]
    frac = lab.groupby("label")["in_O"].mean()
    for row in classes.to_dict("records"):
        assert row["frac_in_O"] == pytest.approx(frac[row["class"]])
    assert classes["frac_in_O"].is_monotonic_decreasing


# --------------------------------------------------------------------------------------- CLI
def test_cli_confidence_writes_results(image_folder, tmp_path, capsys):
    from analysis.cache import EmbeddingCache
    from analysis.cli import main
    from analysis.data import create_dataset
    from analysis.models import load_model
    from analysis.results import read_run

    args = ["confidence", "--model", "clipaudit-tiny-vit", "--dataset", str(image_folder), "--out",
            str(tmp_path / "res"), "--cache-dir", str(tmp_path / "c"), "--n-boot", "20", "--target-accuracy", "0.5",
            "--perturb", "hflip", "vflip", "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "low-confidence set" in out and "AUROC" in out and "results:" in out
    (run,) = (tmp_path / "res" / "confidence").glob("*.json")
    record, tables = read_run(run)
    assert record["task"] == "confidence" and record["perturbations"] == ["hflip", "vflip"]
    assert {"per_sample", "scores", "selective", "sets", "thresholds", "classes"} <= set(tables)
    per = tables["per_sample"]
    assert len(per) == 12
    np.testing.assert_array_equal(per["in_O_B"], (per["pred_hflip"] != per["pred_name_only"])
                                  | (per["pred_vflip"] != per["pred_name_only"]))
    np.testing.assert_array_equal(per["in_O"], per["in_O_T"] | per["in_O_B"])
    # S_T recomputed from the same cached embeddings with a loop over the 80 templates
    model = load_model("clipaudit-tiny-vit")
    ds = create_dataset(str(image_folder))
    cache = EmbeddingCache(tmp_path / "c", progress=False)
    per_template = cache.class_embeddings(model, ds.classnames, "openai_imagenet")
    name = cache.class_embeddings(model, ds.classnames, "name_only")[0]
    feats = cache.image_features(model, ds).features
    ref = (feats @ name.T).argmax(1)
    s_t = np.mean([(feats @ w.T).argmax(1) == ref for w in per_template], axis=0)
    np.testing.assert_allclose(per.sort_values("index")["S_T"], s_t)
    assert json.loads(run.read_text())["metrics"]["n_images"] == 12
    assert isinstance(tables["scores"], pd.DataFrame) and len(tables["thresholds"]) == len(tables["scores"])


def test_cli_bad_splits_is_a_one_line_error(tmp_path, capsys):
    from analysis.cli import main

    assert main(["confidence", "--splits", "0-x", "--cache-dir", str(tmp_path)]) == 2
    assert "--splits" in capsys.readouterr().err
