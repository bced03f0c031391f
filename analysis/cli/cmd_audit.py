"""``clipaudit audit``: the main job, every pipeline on one embedding cache, results and an HTML report."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from .._checks import ClipauditError

NAME = "audit"
HELP = "audit models end to end: zero-shot, confidence, hierarchy, concepts, retrieval -> results + HTML report"
DESCRIPTION = """\
Run every pipeline on one embedding cache, loading each model once:
  zeroshot    prompt-ensemble zero-shot accuracy, per-class accuracy, confusion matrix
  confidence  self-consistency confidence (S_T, S_B, low-confidence set O) and deployment thresholds
  hierarchy   WordNet reranking of the low-confidence set O (needs WordNet; skipped with a reason if absent)
  concepts    mutual-knowledge concepts on a sample of classes (default: the 2 classes most often in O,
              8 images each), with per-class figures, MI curves and AUC
  retrieval   recall@k, only when the dataset has captions
Results go to RESULTS_DIR/audit/NAME/ (one folder per task, config.json = the effective options) and the
report to REPORTS_DIR/NAME/index.html (one self-contained file) with report.json beside it. A stage that
fails is reported in the summary and in the report; the other stages still run. Embeddings are cached:
re-running with the same inputs encodes nothing.

Options come from, in increasing priority: the defaults, --config FILE (TOML, or a saved config.json), and
the command line. Every option has a config key; see the example below and `analysis.audit.AuditConfig`.

examples:
  clipaudit audit                                          # clipaudit-lit on the bundled subset
  clipaudit audit --model clipaudit-tiny-rn --limit 200    # a quick run on 200 bundled images
  clipaudit audit -m ViT-B-32 -p laion2b_s34b_b79k -m ViT-B-16 -p openai -d imagenet --root /data/imagenet
  clipaudit audit -d ./my_images/ --no-concepts --no-hierarchy
  clipaudit audit --config audit.toml --name nightly
  clipaudit audit --config results/audit/NAME/config.json  # replay a previous audit

audit.toml:
  name = "fashion-check"
  dataset = "bundled"
  limit = 500
  templates = "openai_imagenet"
  [[models]]
  name = "clipaudit-tiny-rn"
  [[models]]
  name = "clipaudit-tiny-vit"
  [confidence]
  target_accuracy = 0.9
  perturbations = ["hflip", "rot:10"]
  [hierarchy]
  keep_fraction = 1.0
  [concepts]
  classes = ["bag", "sandal"]
  images_per_class = 4
  [retrieval]
  enabled = false
"""

S = argparse.SUPPRESS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None, metavar="FILE",
                        help="TOML file (or a saved config.json) with any of the options below")
    parser.add_argument("--show-config", action="store_true", help="print the effective config as JSON and exit")
    g = parser.add_argument_group("models and data")
    g.add_argument("--model", "-m", action="append", default=S,
                   help="model name or folder, 'local-dir:PATH', or an open_clip architecture; repeat to compare "
                        "models side by side (default: clipaudit-lit)")
    g.add_argument("--pretrained", "-p", action="append", default=S,
                   help="open_clip tag or checkpoint file, one per --model in order ('none' for no weights)")
    g.add_argument("--device", default=S, help="cpu, cuda, cuda:1 ... (default: auto)")
    g.add_argument("--dataset", "-d", default=S,
                   help="dataset name (see `clipaudit datasets`), an image folder (one subfolder per class) or a "
                        ".csv/.jsonl manifest (default: bundled)")
    g.add_argument("--root", default=S, help="data folder for named datasets")
    g.add_argument("--split", default=S, help="split of a named dataset (default: test)")
    g.add_argument("--classnames", default=S, help="file of class names overriding the dataset's")
    g.add_argument("--limit", type=int, default=S, help="stratified subset of about N images (quick runs)")
    g.add_argument("--templates", "-t", default=S, help="prompt set for every stage (default: openai_imagenet)")
    st = parser.add_argument_group("stages")
    for stage in ("zeroshot", "confidence", "hierarchy", "concepts", "retrieval"):
        st.add_argument(f"--no-{stage}", action="store_true", default=S, help=f"switch the {stage} stage off")
    st.add_argument("--target-accuracy", type=float, default=S,
                    help="confidence: accuracy the deployment threshold must reach (default: 0.95)")
    st.add_argument("--max-risk", type=float, default=S, help="confidence: or the maximum error rate instead")
    st.add_argument("--perturb", nargs="*", default=S, metavar="NAME",
                    help="confidence: perturbations for S_B (default: hflip)")
    st.add_argument("--n-boot", type=int, default=S, help="confidence: bootstrap resamples (default: 1000)")
    st.add_argument("--hierarchy-set", choices=["low-confidence", "all"], default=S,
                    help="hierarchy: rerank the low-confidence set O (default) or all images")
    st.add_argument("--concept-classes", nargs="+", default=S, metavar="CLASS",
                    help="concepts: classes to explain (default: the 2 most often low-confidence)")
    st.add_argument("--images-per-class", type=int, default=S, help="concepts: images per class (default: 8)")
    st.add_argument("--descriptors", default=S,
                    help="concepts: descriptor pool name or file (default: auto, the pool named in the dataset)")
    st.add_argument("--k", type=int, nargs="+", default=S, help="retrieval: recall@k values (default: 1 5 10)")
    o = parser.add_argument_group("output and cache")
    o.add_argument("--name", default=S, help="run name: folder under RESULTS_DIR/audit and REPORTS_DIR "
                                             "(default: <model>_<dataset>)")
    o.add_argument("--results-dir", default=S, help="default: results")
    o.add_argument("--reports-dir", default=S, help="default: reports")
    o.add_argument("--no-report", action="store_true", default=S, help="write results only")
    o.add_argument("--cache-dir", default=S, help="embedding cache (default: $CLIPAUDIT_CACHE or ~/.cache/clipaudit)")
    o.add_argument("--no-cache", action="store_true", default=S, help="compute embeddings in memory only")
    o.add_argument("--cache-dtype", choices=["float16", "float32"], default=S, help="default: float16")
    o.add_argument("--batch-size", type=int, default=S, help="encoder batch size (default: 64)")
    o.add_argument("--quiet", "-q", action="store_true", default=S, help="no progress output")


#: command-line destination -> (config section or None, key)
_FLAT = {
    "device": (None, "device"), "dataset": (None, "dataset"), "root": (None, "root"), "split": (None, "split"),
    "classnames": (None, "classnames"), "limit": (None, "limit"), "templates": (None, "templates"),
    "name": (None, "name"), "results_dir": (None, "results_dir"), "reports_dir": (None, "reports_dir"),
    "cache_dir": (None, "cache_dir"), "no_cache": (None, "no_cache"), "cache_dtype": (None, "cache_dtype"),
    "batch_size": (None, "batch_size"), "quiet": (None, "quiet"),
    "target_accuracy": ("confidence", "target_accuracy"), "max_risk": ("confidence", "max_risk"),
    "perturb": ("confidence", "perturbations"), "n_boot": ("confidence", "n_boot"),
    "hierarchy_set": ("hierarchy", "set"), "concept_classes": ("concepts", "classes"),
    "images_per_class": ("concepts", "images_per_class"), "descriptors": ("concepts", "descriptors"),
    "k": ("retrieval", "k"),
}


def config_from_args(args: argparse.Namespace) -> Any:
    """Defaults < --config file < options given on the command line."""
    from ..audit import AuditConfig, ModelSpec, config_from_dict, config_to_dict, load_config

    config = load_config(args.config) if args.config else AuditConfig()
    data = config_to_dict(config)
    given = vars(args)
    for dest, (section, key) in _FLAT.items():
        if dest in given:
            (data[section] if section else data)[key] = given[dest]
    if given.get("target_accuracy") is not None:
        data["confidence"]["max_risk"] = None
    if given.get("max_risk") is not None:
        data["confidence"]["target_accuracy"] = None
    for stage in ("zeroshot", "confidence", "hierarchy", "concepts", "retrieval"):
        if given.get(f"no_{stage}"):
            data[stage]["enabled"] = False
    if given.get("no_report"):
        data["report"] = False
    if "model" in given:
        pretrained = given.get("pretrained") or []
        if pretrained and len(pretrained) != len(given["model"]):
            raise ClipauditError(f"--pretrained was given {len(pretrained)} time(s) for {len(given['model'])} "
                                 f"--model(s): give one per model ('none' for no weights), or none at all.")
        pretrained = [None if p in (None, "", "none") else p for p in pretrained] or [None] * len(given["model"])
        data["models"] = [dataclasses.asdict(ModelSpec(m, p)) for m, p in zip(given["model"], pretrained)]
    elif "pretrained" in given:
        raise ClipauditError("--pretrained needs --model (one --pretrained per --model).")
    return config_from_dict(data)


def run(args: argparse.Namespace) -> int:
    from ..audit import config_to_dict, format_summary, run_audit

    config = config_from_args(args)
    if args.show_config:
        print(json.dumps(config_to_dict(config), indent=2))
        return 0
    result = run_audit(config=config)
    print(format_summary(result))
    return 0 if result.ok else 1
