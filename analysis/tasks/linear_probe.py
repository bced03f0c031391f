"""Task ``linear_probe``: CLIP_benchmark's linear-probe protocol on cached image features.

Logistic regression (``sklearn.linear_model.LogisticRegression``) on the image features of the dataset's
train split; the inverse regularisation strength C is chosen on a validation part carved from the train
split (stratified, seeded), the model is refitted on train + validation with that C, and scored on the
evaluation data. Nothing is chosen on the evaluation data, and a train split that is the evaluation data
is refused. This module is the whole task: registering it adds ``clipaudit linear-probe``, an audit stage,
a ``[linear_probe]`` config table and a report section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import register
from ._options import option
from ._task import Task, TaskResult, TaskSkipped

if TYPE_CHECKING:
    import numpy as np

__all__ = ["LinearProbeOptions", "TASK", "fit_linear_probe"]


@dataclass
class LinearProbeOptions:
    train_split: str = option("train", help="split whose image features train the probe")
    train_limit: int | None = option(10000, low=1, help="stratified subset of the train split (encoding costs one "
                                                        "image pass per train image; none: all of it)")
    k_shot: int | None = option(None, low=1, help="few-shot: K train images per class (none: all)")
    val_fraction: float = option(0.2, low=0.01, high=0.9,
                                 help="share of the train images held out to choose the regularisation C")
    c_values: list[float] = option(factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0], low=0.0,
                                   metavar="C", help="inverse L2 regularisation strengths tried on the validation part")
    max_iter: int = option(1000, low=1, help="L-BFGS iterations per fit")
    probe_seed: int = option(0, help="seed of the few-shot draw and the validation split")


def _few_shot(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    import numpy as np

    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def fit_linear_probe(train_x: np.ndarray, train_y: np.ndarray, *, c_values: list[float], val_fraction: float,
                     max_iter: int, seed: int) -> tuple[Any, float, list[dict[str, float]]]:
    """Choose C on a stratified validation part of the train data, then refit on all of it.

    Returns
    -------
    model : LogisticRegression
        Fitted on every train row with the chosen C.
    best_c : float
    sweep : list of dict
        ``{"C", "val_acc1"}`` per tried value.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    fit_idx, val_idx = train_test_split(np.arange(len(train_y)), test_size=val_fraction, random_state=seed,
                                        stratify=train_y)
    sweep = []
    for c in c_values:
        clf = LogisticRegression(C=c, max_iter=max_iter).fit(train_x[fit_idx], train_y[fit_idx])
        sweep.append({"C": float(c), "val_acc1": float(clf.score(train_x[val_idx], train_y[val_idx]))})
    best = max(sweep, key=lambda r: (r["val_acc1"], -r["C"]))["C"]  # ties: the stronger regularisation
    return LogisticRegression(C=best, max_iter=max_iter).fit(train_x, train_y), best, sweep


def run(ctx: Any, o: LinearProbeOptions) -> TaskResult:
    import dataclasses

    import numpy as np
    import pandas as pd

    from .._checks import ClipauditError
    from ..classifier import valid_rows
    from ..metrics import classification_summary
    from ..provenance import data_identity
    from ._load import load_dataset

    if ctx.data_options is None:
        raise TaskSkipped("the evaluation dataset was passed as an object; give it by name or path so its train "
                          "split can be found")
    try:
        train_ds = load_dataset(dataclasses.replace(ctx.data_options, split=o.train_split, limit=o.train_limit,
                                                    seed=o.probe_seed))
    except ClipauditError as err:
        raise TaskSkipped(f"no {o.train_split!r} split to train on: {err}") from None
    if train_ds.fingerprint() == ctx.dataset.fingerprint() or getattr(train_ds, "split", None) == getattr(
            ctx.dataset, "split", "?"):
        raise TaskSkipped(f"the train split {o.train_split!r} is the evaluation data: a probe trained on it would "
                          "be scored on its own training images")
    if list(train_ds.classnames) != list(ctx.dataset.classnames):
        raise ClipauditError(f"the {o.train_split!r} split has other classes than the evaluation data "
                             f"({len(train_ds.classnames)} vs {len(ctx.dataset.classnames)}).")
    train = ctx.cache.image_features(ctx.model, train_ds)
    keep = np.flatnonzero(train.valid & (np.asarray(train_ds.labels) >= 0))
    tx, ty = train.features[keep], np.asarray(train_ds.labels)[keep]
    if o.k_shot is not None:
        pick = _few_shot(ty, o.k_shot, np.random.default_rng(o.probe_seed))
        tx, ty = tx[pick], ty[pick]
    if len(np.unique(ty)) < 2:
        raise ClipauditError(f"the {o.train_split!r} split has images of fewer than 2 classes: nothing to probe.")
    clf, best_c, sweep = fit_linear_probe(tx, ty, c_values=o.c_values, val_fraction=o.val_fraction,
                                          max_iter=o.max_iter, seed=o.probe_seed)
    views = ctx.images()
    valid, skipped = valid_rows({"none": views["none"]})
    idx = np.flatnonzero(valid & (np.asarray(ctx.dataset.labels) >= 0))
    scores = np.full((len(idx), len(ctx.dataset.classnames)), -np.inf, dtype=np.float64)
    scores[:, clf.classes_] = clf.predict_log_proba(views["none"].features[idx])
    labels = np.asarray(ctx.dataset.labels)[idx]
    metrics = {**classification_summary(scores, labels), "C": best_c, "n_train": int(len(ty)),
               "n_images": int(len(idx)), "n_skipped": len(skipped)}
    pred = np.argmax(scores, axis=1)
    table = pd.DataFrame({"index": idx, "label": labels, "pred": pred, "correct": pred == labels})
    info = {"train_data": data_identity(train_ds), "classnames": list(ctx.dataset.classnames), "skipped": skipped,
            "protocol": "sklearn LogisticRegression (L-BFGS, multinomial) on L2-normalised image features; C chosen "
                        "on a stratified validation part of the train split, refitted on all train images"}
    return TaskResult(metrics, {"predictions": table, "c_sweep": pd.DataFrame(sweep)}, info=info)


TASK = register(Task(
    name="linear_probe",
    title="Linear probe",
    help="linear probe (CLIP_benchmark protocol): logistic regression on the train split's image features",
    description="""\
Fit a logistic-regression probe (scikit-learn) on the image features of the dataset's train split, with
the regularisation C chosen on a held-out validation part of that split, and score it on the evaluation
data: acc1, acc5 (5+ classes) and mean per-class recall, next to zero-shot. Skipped (with the reason)
when the dataset has no train split, e.g. the bundled subset (Fashion-MNIST test images only).

examples:
  clipaudit linear-probe --dataset fashion-mnist --split test --train-limit 5000
  clipaudit linear-probe --dataset fashion-mnist --k-shot 16         # 16-shot probe
""",
    options=LinearProbeOptions,
    run=run,
    headline=("acc1", "mean_per_class_recall", "C"),
    uses_classifier=False,
    order=60,
))
