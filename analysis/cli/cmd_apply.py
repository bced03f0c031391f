"""``clipaudit apply``: run a deployment policy on images: predict or abstain, with prediction sets."""

from __future__ import annotations

import argparse

NAME = "apply"
ORDER = 15
HELP = "run a deployment_policy.json on images: prediction or abstention per image, prediction sets"
DESCRIPTION = """\
Load a policy written by the deployment audit (`clipaudit audit` or `clipaudit deployment`:
deployment_policy.json), check that the model's weights and the prompt set are the ones it was calibrated
on (refused otherwise), compute its confidence score on every image, and answer per image: the predicted
class when the score passes the threshold, else "abstain"; plus the conformal prediction set. Prints the
share kept and, on labelled data, the accuracy of what was kept; writes the per-image table to
OUT/apply/.

examples:
  clipaudit apply results/audit/NAME/deployment_policy.json --dataset ./new_images/
  clipaudit apply results/audit/NAME/deployment_policy.json --held-out   # the audit's held-out half: reproduces
                                                                         # its reported accuracy and coverage
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..tasks._common import DataOptions, OutputOptions
    from ..tasks._options import add_arguments as add_options

    parser.add_argument("policy", help="deployment_policy.json")
    parser.add_argument("--held-out", action="store_true",
                        help="use the held-out part of the data the policy was calibrated on (default dataset: that "
                             "data)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    add_options(parser, DataOptions, title="data (default: the data the policy was calibrated on)",
                skip=("templates",))
    add_options(parser, OutputOptions, title="output and cache")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from .._checks import ClipauditError
    from ..policy import Policy
    from ..provenance import RunIdentity, data_identity, describe_data, versions
    from ..results import output_folder, write_identified_run
    from ..tasks._common import DataOptions, OutputOptions
    from ..tasks._load import load_dataset, load_model, make_cache
    from ..tasks._options import from_namespace

    policy = Policy.load(args.policy)
    out_o = from_namespace(OutputOptions(), args)
    data_o = from_namespace(DataOptions(), args)
    given = vars(args)
    recorded = policy.data["calibration"].get("data_options")
    if "dataset" not in given:  # the calibration data, as it was named
        if not recorded:
            raise ClipauditError(f"{args.policy}: the policy does not record how its calibration data was named; "
                                 "give --dataset.")
        data_o = dataclasses.replace(DataOptions(**recorded), **{k: v for k, v in vars(data_o).items()
                                                                 if k in given and k != "dataset"})
    output_folder(out_o.out)
    cache = make_cache(out_o)
    dataset = load_dataset(data_o)
    model = load_model(policy.model_name, policy.pretrained, args.device)
    table, summary = policy.apply(model, dataset, cache, held_out=args.held_out)
    identity = RunIdentity(task="apply", model=model.info.as_dict(), data=data_identity(dataset),
                           prompts=policy.data.get("prompts"),
                           options={"policy": policy.data, "held_out": args.held_out},
                           embedding_dtype=cache.dtype, versions=versions())
    path = write_identified_run(out_o.out, identity, result_name="apply", metrics=summary,
                                tables={"decisions": table},
                                extra={"policy_file": str(args.policy), "data": describe_data(identity.data)})
    what = "held-out part of " if args.held_out else ""
    print(f"apply: {policy.model_name} on the {what}{describe_data(identity.data)}")
    if policy.data.get("score"):
        s = summary
        acc = "n/a (unlabelled)" if s.get("accuracy") is None else f"{100 * s['accuracy']:.1f}%"
        print(f"  rule: keep when {policy.data['score']['name']} {policy.data['keep_when'].split(' ', 1)[1]} "
              f"(threshold {policy.data['threshold']:.4g}); kept {s['kept']} of {s['n_images']} images "
              f"({100 * s['coverage']:.1f}%), accuracy on kept {acc}")
    else:
        print("  the policy has no guaranteed threshold (no score reached the target): every image is answered "
              "with its prediction set only")
    if "set_coverage" in summary and summary["set_coverage"] is not None:
        print(f"  prediction sets: coverage {100 * summary['set_coverage']:.1f}%, mean size "
              f"{summary['mean_set_size']:.2f}")
    print(f"results: {path}")
    return 0
