"""Options of the reproduction tables, declared like the tasks' (one dataclass per group, see ``tasks._options``).

Options that are a task's option keep the task's name, meaning, checks and help (:func:`like` copies the
field): ``--classes`` are class names and ``--n-classes`` a number, as in ``clipaudit concepts`` and the
audit; ``--keep-fraction`` and ``--max-children`` are ``clipaudit hierarchy``'s. Where a table's protocol
needs another default (the paper's 50 images per class), only the default and its help text differ.

Import-light (no numpy, no torch): ``clipaudit reproduce --help`` builds its parser from these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..tasks._options import option
from ..tasks.concepts import ConceptsOptions
from ..tasks.hierarchy import HierarchyTaskOptions

__all__ = ["GeOptions", "MutualKnowledgeOptions", "DemoOptions", "like", "TAB7_KEEP"]

_KEEP: Any = object()

#: Tab. 7's rows: fractions of the WordNet words kept by pruning.
TAB7_KEEP = (1.0, 0.4, 0.3, 0.2, 0.1)


def like(cls: type, name: str, default: Any = _KEEP, *, help: str | None = None) -> Any:
    """An option declared as field ``name`` of the options dataclass ``cls`` (same flag, choices, bounds, parser).

    ``default`` and ``help`` replace the task's where a table's protocol differs.
    """
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta = f.metadata
    if default is _KEEP:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    kwargs = {k: meta.get(k) for k in ("choices", "flag", "short", "metavar", "nargs", "parse", "low", "high")}
    if meta.get("aliases"):
        kwargs["aliases"] = meta["aliases"]
    if isinstance(default, list):
        value = list(default)
        return option(help=help or meta["help"], factory=lambda: list(value), cli=meta.get("cli", True), **kwargs)
    return option(default, help=help or meta["help"], cli=meta.get("cli", True), **kwargs)


@dataclass
class GeOptions:
    """The hierarchy method in the Ge et al. 2023 tables (Tab. 1, 3, 4, 5, 7); defaults are the paper's."""

    top_k: int = like(HierarchyTaskOptions, "top_k")
    max_children: int | None = like(HierarchyTaskOptions, "max_children")
    parent_policy: str = like(HierarchyTaskOptions, "parent_policy")
    parent_words: str = like(HierarchyTaskOptions, "parent_words")
    keep_fraction: float = like(HierarchyTaskOptions, "keep_fraction",
                                help="fraction of hierarchy words kept by norm-variance pruning in Tab. 1/3/4/5; "
                                     "1 = no pruning (paper: 0.4)")
    keep_abstract: bool = like(HierarchyTaskOptions, "keep_abstract")
    keep_pruned_children: bool = like(HierarchyTaskOptions, "keep_pruned_children")
    tab7_keep: list[float] = option(factory=lambda: list(TAB7_KEEP), low=0.0, high=1.0, metavar="F",
                                    help="fractions of the WordNet words kept, one Tab. 7 row each (paper: 1 0.4 "
                                         "0.3 0.2 0.1)")

    def hierarchy_options(self, keep_fraction: float | None = None) -> Any:
        """The :class:`analysis.hierarchy.HierarchyOptions` these stand for (``keep_fraction``: Tab. 7's row)."""
        from ..hierarchy import HierarchyOptions

        keep = self.keep_fraction if keep_fraction is None else keep_fraction
        return HierarchyOptions(top_k=self.top_k, max_children=self.max_children, parent_policy=self.parent_policy,
                                parent_words=self.parent_words, drop_abstract=not self.keep_abstract,
                                keep_fraction=None if keep >= 1 else keep,
                                prune_children=not self.keep_pruned_children)


@dataclass
class MutualKnowledgeOptions:
    """The concepts task's options in the Sammani & Deligiannis 2024 tables (the task's names and meaning)."""

    classes: list[str] | None = like(ConceptsOptions, "classes",
                                     help="class names to explain (none: the first --n-classes classes present in "
                                          "the data, in class order; classes whose name occurs twice are left out)")
    n_classes: int | None = like(ConceptsOptions, "n_classes", None,
                                 help="classes explained when --classes is not given (none: every class)")
    images_per_class: int = like(ConceptsOptions, "images_per_class", 50,
                                 help="images decomposed per class (the first N of the class; the paper: all 50 "
                                      "ImageNet val images)")
    descriptors: str | None = like(ConceptsOptions, "descriptors", None,
                                   help="descriptor pool, a {class: [descriptors]} .json or a .txt (required: "
                                        "clipaudit ships none for ImageNet; the paper's is most likely Menon & "
                                        "Vondrick's descriptors_imagenet.json)")
    foreground: str = like(ConceptsOptions, "foreground")
    crf: bool = like(ConceptsOptions, "crf")
    mi: str = like(ConceptsOptions, "mi")
    parts: int = like(ConceptsOptions, "parts")
    cluster_seed: int = like(ConceptsOptions, "cluster_seed")

    def config(self, batch_size: int) -> Any:
        """The pipeline's :class:`~analysis.concepts.pipeline.ConceptConfig`, as the concepts task builds it."""
        from ..tasks.concepts import concept_config

        return concept_config(self, batch_size)


@dataclass
class DemoOptions:
    """Which data the demo model's table runs on."""

    demo_dataset: str = option("fashion-mnist", help="dataset of the demo table: a name (see `clipaudit datasets`), "
                                                     "an image folder or a manifest")
    demo_root: str | None = option(None, help="data folder of the demo dataset (none: --root, else Debian's "
                                              "fashion-mnist folder or a download)")
