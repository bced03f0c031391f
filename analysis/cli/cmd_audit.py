"""``clipaudit audit``: the main job, every pipeline on one embedding cache, results and an HTML report."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._checks import ClipauditError

NAME = "audit"
ORDER = 0
HELP = "audit models end to end: every registered task on one cache -> results + HTML report"
DESCRIPTION = """\
Run every registered task on one embedding cache, loading each model once and decoding each image once
(one pass encodes every view the tasks need):
{tasks}
Results go to OUT/audit/NAME/ (one folder per task, files named by their settings; config.json = the
effective options; runs.json = what this run wrote) and the report to REPORTS_DIR/NAME/index.html (one
self-contained file) with report.json beside it. A task that fails or does not apply is reported in the
summary and in the report; the others still run. Embeddings are cached: re-running with the same inputs
encodes nothing. With --limit, every output (file names, summary, report banner) says it is a subset.

Options come from, in increasing priority: the defaults, --config FILE (TOML, or a saved config.json), and
the command line. Every option has a config key: top-level keys for the shared options, a [TASK] table per
task (its options and `enabled`). A task option is --TASK-OPTION on the command line (e.g.
--confidence-n-boot), or just --OPTION when no other task has an option of that name.

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


def _describe_tasks() -> str:
    from ..tasks import list_tasks

    return "\n".join(f"  {t.cli_name:<13}{t.help}" for t in list_tasks())


def _task_aliases() -> dict[str, dict[str, list[str]]]:
    """Per task, the bare --OPTION aliases of options whose name no other task or shared group uses."""
    import dataclasses
    from collections import Counter

    from ..audit import AuditConfig
    from ..tasks import list_tasks

    top = {f.name for f in dataclasses.fields(AuditConfig)}
    counts = Counter(f.name for t in list_tasks() for f in dataclasses.fields(t.options))
    return {t.name: {f.name: [f"--{f.name.replace('_', '-')}"] for f in dataclasses.fields(t.options)
                     if counts[f.name] == 1 and f.name not in top and not f.metadata.get("flag")}
            | {f.name: [f.metadata["flag"]] for f in dataclasses.fields(t.options)
               if f.metadata.get("flag") and counts[f.name] == 1}
            for t in list_tasks()}


def _shared_task_options() -> dict[str, list[Any]]:
    """Option names that several tasks have (and no shared group): name -> the tasks' fields."""
    import dataclasses

    from ..audit import AuditConfig
    from ..tasks import list_tasks

    top = {f.name for f in dataclasses.fields(AuditConfig)}
    found: dict[str, list[Any]] = {}
    for t in list_tasks():
        for f in dataclasses.fields(t.options):
            if f.name not in top:
                found.setdefault(f.name, []).append((t, f))
    return {name: fields for name, fields in found.items() if len(fields) > 1}


def _add_shared_task_options(parser: argparse.ArgumentParser) -> None:
    """A bare --OPTION that several tasks have sets it in all of them (e.g. --target-accuracy)."""
    import dataclasses

    from ..tasks._options import add_arguments as add_options

    shared = _shared_task_options()
    if not shared:
        return
    fields = []
    for name, owners in shared.items():
        task, f = owners[0]
        meta = dict(f.metadata)
        tasks = ", ".join(t.name for t, _ in owners)
        meta["help"] = f"sets this option of every task that has it ({tasks}): {meta['help']}"
        fields.append((name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory,
                                                       metadata=meta)))
    cls = dataclasses.make_dataclass("SharedTaskOptions", fields)
    add_options(parser, cls, title="options several tasks share", dest_prefix="shared.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..audit import AuditConfig
    from ..tasks import list_tasks
    from ..tasks._options import add_arguments as add_options

    parser.description = DESCRIPTION.replace("{tasks}", _describe_tasks())
    parser.add_argument("--config", "-c", default=None, metavar="FILE",
                        help="TOML file (or a saved config.json) with any of the options below")
    parser.add_argument("--show-config", action="store_true", help="print the effective config as JSON and exit")
    g = parser.add_argument_group("models")
    g.add_argument("--model", "-m", action="append", default=argparse.SUPPRESS,
                   help="model name or folder, 'local-dir:PATH', or an open_clip architecture; repeat to compare "
                        "models side by side (default: clipaudit-lit)")
    g.add_argument("--pretrained", "-p", action="append", default=argparse.SUPPRESS,
                   help="open_clip tag or checkpoint file, one per --model in order ('none' for no weights)")
    add_options(parser, AuditConfig, title="audit, data, output and cache",
                skip=("models", *(t.name for t in list_tasks())))
    aliases = _task_aliases()
    _add_shared_task_options(parser)
    for task in list_tasks():
        stage = getattr(AuditConfig(), task.name)
        grp = parser.add_argument_group(f"{task.name} (--no-{task.cli_name} switches it off)")
        grp.add_argument(f"--{task.cli_name}", dest=f"{task.name}.enabled", action=argparse.BooleanOptionalAction,
                         default=argparse.SUPPRESS,
                         help=f"run the {task.name} task (default: {'on' if stage.enabled else 'off'})")
        add_options(grp, task.options, prefix=f"{task.cli_name}-", dest_prefix=f"{task.name}.",
                    aliases=aliases[task.name])


def config_from_args(args: argparse.Namespace) -> Any:
    """Defaults < --config file < options given on the command line."""
    from ..audit import AuditConfig, ModelSpec, load_config, stage_names
    from ..tasks._options import from_namespace

    config = load_config(args.config) if args.config else AuditConfig()
    given = vars(args)
    config = from_namespace(config, args)
    for name, owners in _shared_task_options().items():  # a bare shared --OPTION first; --TASK-OPTION wins
        if f"shared.{name}" in given:
            for task, f in owners:
                given.setdefault(f"{task.name}.{f.name}", given[f"shared.{name}"])
    for name in stage_names():
        setattr(config, name, from_namespace(getattr(config, name), args, dest_prefix=f"{name}.", where=name))
    if "model" in given:
        pretrained = given.get("pretrained") or []
        if pretrained and len(pretrained) != len(given["model"]):
            raise ClipauditError(f"--pretrained was given {len(pretrained)} time(s) for {len(given['model'])} "
                                 f"--model(s): give one per model ('none' for no weights), or none at all.")
        pretrained = [None if p in (None, "", "none") else p for p in pretrained] or [None] * len(given["model"])
        config.models = [ModelSpec(m, p) for m, p in zip(given["model"], pretrained)]
    elif "pretrained" in given:
        raise ClipauditError("--pretrained needs --model (one --pretrained per --model).")
    from ..audit import config_from_dict, config_to_dict

    return config_from_dict(config_to_dict(config))  # one validation path for files and flags


def run(args: argparse.Namespace) -> int:
    from ..audit import config_to_dict, format_summary, run_audit

    config = config_from_args(args)
    if args.show_config:
        print(json.dumps(config_to_dict(config), indent=2))
        return 0
    result = run_audit(config=config)
    print(format_summary(result))
    return 0 if result.ok else 1
