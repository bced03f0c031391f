"""A deployment policy: what the deployment audit chose, as a file that runs on new images.

``deployment_policy.json`` (written by the ``deployment`` task) holds the model (name, weights SHA-256), the
prompt set (name and hash), the confidence options and the chosen score with its threshold, the guarantee
(target, delta, method, n_cal), the temperature and the conformal quantile. :meth:`Policy.apply` computes
the same score on new images and answers per image: the prediction, or an abstention, and the prediction
set. It refuses a model or prompt set whose hash differs from the policy's.

Example
-------
>>> from analysis import Policy, load_model, create_dataset            # doctest: +SKIP
>>> policy = Policy.load("results/audit/NAME/deployment_policy.json")    # doctest: +SKIP
>>> table, summary = policy.apply(load_model(policy.model_name), create_dataset("./new_images/"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._checks import ClipauditError
from ._io import read_user_json, read_user_text

__all__ = ["Policy"]


@dataclass(frozen=True)
class Policy:
    """A loaded ``deployment_policy.json`` (see the module docstring)."""

    data: dict[str, Any]
    source: str = "policy"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        """Read and check a policy file (one clear error naming the file when it is not one)."""
        path = Path(path)
        data = read_user_json(path, "Policy file", read_user_text(path, "Policy file"))
        if not isinstance(data, dict) or data.get("kind") != "clipaudit-deployment-policy":
            raise ClipauditError(f"Policy file {str(path)!r} is not a clipaudit deployment policy (written by "
                                 "`clipaudit deployment` or `clipaudit audit` as deployment_policy.json).")
        for key in ("model", "prompts", "confidence_options", "temperature"):
            if key not in data:
                raise ClipauditError(f"Policy file {str(path)!r} has no {key!r}: it is incomplete.")
        return cls(data, str(path))

    @property
    def model_name(self) -> str:
        return self.data["model"]["name"]

    @property
    def pretrained(self) -> str | None:
        return self.data["model"].get("pretrained")

    def check(self, model: Any, templates: Any) -> None:
        """Refuse a model or prompt set that is not the one the policy was calibrated for."""
        want = self.data["model"].get("weights_sha256")
        got = model.info.weights_sha256
        if want and got != want:
            raise ClipauditError(f"{self.source}: the model's weights (SHA-256 {got[:12]}...) are not the ones this "
                                 f"policy was calibrated on ({want[:12]}..., {self.model_name}); recalibrate with "
                                 "`clipaudit deployment` on this model.")
        want_p = (self.data.get("prompts") or {}).get("sha256")
        if want_p and templates.fingerprint() != want_p:
            raise ClipauditError(f"{self.source}: prompt set {templates.name!r} differs from the one the policy was "
                                 "calibrated with; its thresholds do not carry over.")

    def apply(self, model: Any, dataset: Any, cache: Any = None, *, held_out: bool = False) -> tuple[Any, dict]:
        """Predict or abstain on every image of ``dataset``; prediction sets where the policy has a quantile.

        Parameters
        ----------
        model : ClipModel
            Must be the policy's model (weights hash checked).
        dataset : ImageDataset
        cache : EmbeddingCache, optional
        held_out : bool
            Use only the held-out part of the calibration data (``dataset`` must be that data): reproduces
            the audit's reported test accuracy and coverage.

        Returns
        -------
        table : DataFrame
            One row per image: index, item, label, prediction, score, decision ("predict"/"abstain"), set.
        summary : dict
            Images, kept, coverage, accuracy on kept (labelled data), set coverage and mean size.
        """
        import numpy as np
        import pandas as pd

        from .cache import EmbeddingCache
        from .data import load_templates
        from .tasks._context import TaskContext
        from .tasks.confidence import ConfidenceOptions, consistency_table
        from .tasks.deployment import _set_probs, calibration_split

        templates = load_templates(self.data["prompts"]["name"])
        self.check(model, templates)
        conf = ConfidenceOptions(**self.data["confidence_options"])
        ctx = TaskContext(model, dataset, cache or EmbeddingCache(progress=False), templates=templates,
                          views=conf.perturbations)
        table, _ = consistency_table(ctx, conf)
        if held_out:
            cal = self.data["calibration"]
            if dataset.fingerprint() != cal["data"]["fingerprint"]:
                raise ClipauditError(f"{self.source}: --held-out needs the data the policy was calibrated on "
                                     f"({cal['data']['name']}, {cal['data']['n_images']} images); this dataset "
                                     "differs.")
            _, test = calibration_split(table["label"].to_numpy(), cal["fraction"], cal["seed"])
            table = table.iloc[test].reset_index(drop=True)
        names = np.asarray(list(dataset.classnames), dtype=object)
        out = pd.DataFrame({"index": table["index"], "item": [dataset.describe(int(i)) for i in table["index"]],
                            "label": table["label"]})
        summary: dict[str, Any] = {"n_images": int(len(table))}
        score_spec = self.data.get("score")
        if score_spec:
            s = table[score_spec["name"]].to_numpy(np.float64)
            keep = s >= self.data["threshold"] if score_spec.get("higher_is_more_confident", True) \
                else s <= self.data["threshold"]
            pred = table[f"pred_{score_spec['prediction']}"].to_numpy()
            out["prediction"] = np.where(keep, names[pred], None)
            out["score"] = s
            out["decision"] = np.where(keep, "predict", "abstain")
            labelled = table["label"].to_numpy() >= 0
            correct = pred == table["label"].to_numpy()
            summary |= {"kept": int(keep.sum()), "coverage": float(keep.mean()) if len(keep) else None,
                        "accuracy": float(correct[keep & labelled].mean()) if (keep & labelled).any() else None}
        conformal = self.data.get("conformal")
        if conformal:
            from .conformal import prediction_sets

            state = ctx.state
            order = np.searchsorted(state.index, table["index"].to_numpy())
            probs = _set_probs(state.logits[order], self.data["temperature"],
                               self.data.get("temperature_kind", "softmax"))
            sets = prediction_sets(probs, conformal["qhat"], method=conformal["method"],
                                   lam=conformal.get("lam", 0.01), k_reg=conformal.get("k_reg", 5),
                                   randomized=conformal.get("randomized", True), rng=conformal.get("rng_seed"))
            out["set"] = [list(names[row]) for row in sets]
            y = table["label"].to_numpy()
            lab = y >= 0
            summary |= {"set_coverage": float(sets[lab, y[lab]].mean()) if lab.any() else None,
                        "mean_set_size": float(sets.sum(1).mean()) if len(sets) else None}
        return out, summary
