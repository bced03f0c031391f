"""One ``clipaudit <task>`` subcommand per registered task, generated from the task registry.

Each gets the shared option groups (model, data and prompts, output and cache) and the task's own options,
all with their defaults and help taken from the option dataclasses.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_task_commands", "TASK_DEST"]

#: Namespace prefix of a task's own options (keeps them apart from the shared groups).
TASK_DEST = "task."


def add_task_commands(sub: Any) -> None:
    from ..tasks import list_tasks
    from ..tasks._common import DataOptions, ModelOptions, OutputOptions
    from ..tasks._options import add_arguments

    for task in list_tasks():
        aliases = [task.name] if task.cli_name != task.name else []
        p = sub.add_parser(task.cli_name, aliases=aliases, help=task.help, description=task.description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(p, ModelOptions, title="model")
        add_arguments(p, DataOptions, title="data and prompts")
        add_arguments(p, task.options, title=f"{task.name} options", dest_prefix=TASK_DEST)
        add_arguments(p, OutputOptions, title="output and cache")
        p.set_defaults(_run=lambda args, name=task.name: run_task_command(name, args))


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def run_task_command(name: str, args: argparse.Namespace) -> int:
    from ..provenance import describe_data, subset_note
    from ..tasks import get_task
    from ..tasks._common import DataOptions, ModelOptions, OutputOptions
    from ..tasks._load import load_dataset, load_model_from, make_cache
    from ..tasks._options import from_namespace
    from ..tasks._runner import run_tasks

    task = get_task(name)
    model_o = from_namespace(ModelOptions(), args)
    data_o = from_namespace(DataOptions(), args)
    out_o = from_namespace(OutputOptions(), args)
    task_o = from_namespace(task.options(), args, dest_prefix=TASK_DEST)
    from .._atomic import clean_stale_temps
    from ..results import output_folder

    cache = make_cache(out_o)
    clean_stale_temps(output_folder(out_o.out) / task.result_name)  # temp files of killed earlier runs
    dataset = load_dataset(data_o)  # before the model: a missing dataset fails in a second
    model = load_model_from(model_o)
    (rec,) = run_tasks(model, dataset, cache, [(task, task_o)], out_dir=out_o.out, templates=data_o.templates,
                       catch=False, skip_existing=out_o.skip_existing, data_options=data_o)
    import json

    record = json.loads(rec.path.read_text())
    data = record["identity"]["data"]
    note = subset_note(data)
    print(f"{task.name}: {model.info.name} on {describe_data(data)}"
          + (f" with prompt set {record['identity']['prompts']['name']}" if record["identity"].get("prompts") else ""))
    if note:
        print(f"  NOTE: {note}; these are not full-dataset numbers.")
    skipped = record.get("skipped") or []
    if skipped:
        print(f"  skipped {len(skipped)} unreadable image(s) (listed in the run JSON); first: "
              f"{skipped[0]['item']}: {skipped[0]['error']}")
    if rec.status == "reused":
        print(f"  reused the earlier result with the same settings ({rec.path.name})")
    if rec.result is not None and task.summary is not None:
        print(task.summary(rec.result))
    else:
        for k, v in record["metrics"].items():
            if isinstance(v, (int, float, str)) or v is None:
                print(f"  {k:<32} {_fmt(v)}")
    print(f"results: {rec.path}")
    return 0
