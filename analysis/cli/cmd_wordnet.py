"""``clipaudit wordnet``: which WordNet is in use, and how a dataset's classes map to it."""

from __future__ import annotations

import argparse
import json

from . import _common as c

NAME = "wordnet"
HELP = "WordNet status (source, version, path) and class -> synset mapping of a dataset"
DESCRIPTION = """\
status: where nltk's WordNet comes from: nltk's data path; else the system WordNet 3.0
(apt-get install wordnet-base wordnet-sense-index), prepared for nltk under the cache folder; else
nltk.download('wordnet') (needs network).
map: each class of a dataset with its synset, how it was found (wnid, override, lemma, ambiguous,
unmapped), its parent and number of children.

examples:
  clipaudit wordnet status
  clipaudit wordnet map --dataset bundled
  clipaudit wordnet map --dataset ./my_images --overrides my_overrides.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="wordnet_action", metavar="ACTION", required=True)
    st = sub.add_parser("status", help="which WordNet source is in use (version, path)")
    st.add_argument("--cache-dir", default=None,
                    help="clipaudit cache folder holding the prepared nltk data (default: $CLIPAUDIT_CACHE "
                         "or ~/.cache/clipaudit)")
    st.add_argument("--no-download", action="store_true", help="do not try nltk.download('wordnet')")
    st.add_argument("--json", action="store_true", help="print JSON")
    mp = sub.add_parser("map", help="class -> synset mapping of a dataset; unmapped and ambiguous classes")
    c.add_dataset_args(mp)
    from ..tasks._options import add_arguments
    from ..tasks.hierarchy import WordNetMapOptions

    add_arguments(mp, WordNetMapOptions, title="WordNet mapping")
    mp.add_argument("--cache-dir", default=None, help="clipaudit cache folder (prepared nltk data)")
    mp.add_argument("--csv", default=None, help="also write the table to this CSV file")


def run(args: argparse.Namespace) -> int:
    from ..data.wordnet import load_wordnet, wordnet_status

    if args.wordnet_action == "status":
        status = wordnet_status(cache_dir=args.cache_dir, download=not args.no_download)
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            print(f"WordNet {status['version']} via nltk {status['nltk']}: source {status['source']}")
            print(f"  path    {status['path']}")
            if status["origin"]:
                print(f"  origin  {status['origin']}")
        return 0

    import pandas as pd

    dataset = c.load_dataset_from_args(args)
    wn = load_wordnet(cache_dir=args.cache_dir)
    from ..hierarchy import map_dataset_classes
    from ..tasks._options import from_namespace
    from ..tasks.hierarchy import WordNetMapOptions

    o = from_namespace(WordNetMapOptions(), args)
    mapping, nodes, source = map_dataset_classes(wn, list(dataset.classnames), dataset.name, class_map=o.class_map,
                                                 overrides=o.overrides, ambiguous=o.ambiguous)
    table = mapping.to_frame()
    table["parent"] = [n.parent_chains[0][0].name if n.parent_chains else None for n in nodes]
    table["n_children"] = [len(n.children) for n in nodes]
    with pd.option_context("display.max_rows", None, "display.width", 160, "display.max_colwidth", 50):
        print(f"{dataset.name}: {len(table)} classes, mapping from {source}")
        print(table[["class", "synset", "how", "parent", "n_children", "definition"]].to_string(index=False))
    if mapping.unmapped:
        print(f"unmapped ({len(mapping.unmapped)}): {mapping.unmapped}")
    for name, cands in mapping.ambiguous.items():
        print(f"ambiguous: {name!r} -> {cands[:6]}{' ...' if len(cands) > 6 else ''}")
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"written: {args.csv}")
    return 0
