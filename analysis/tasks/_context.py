"""What a task sees while it runs: the model, the data, the one cache and the one classifier state."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any

__all__ = ["TaskContext"]


class TaskContext:
    """Shared inputs of every task run on one model and one dataset.

    Image features of every view any task of the run needs are fetched in one call (one decode pass
    over the images, see :meth:`analysis.cache.EmbeddingCache.image_views`); the classifier state is built
    once from them. Typed outputs of earlier tasks are offered through :meth:`output`.

    Parameters
    ----------
    model : ClipModel
    dataset : ImageDataset
    cache : EmbeddingCache
    templates : str or TemplateSet
        The run's prompt set.
    views : iterable of str
        Perturbations to encode besides the original image (the union over the run's tasks).
    echo : callable, optional
        Progress lines.
    data_options : DataOptions, optional
        How ``dataset`` was named, so a task can load another split of it (the linear probe's train split).
    """

    def __init__(self, model: Any, dataset: Any, cache: Any, *, templates: Any = "openai_imagenet",
                 views: Iterable[str] = (), echo: Callable[[str], None] | None = None,
                 data_options: Any = None) -> None:
        self.model, self.dataset, self.cache = model, dataset, cache
        self.data_options = data_options
        self._templates = templates
        self._views = list(dict.fromkeys(["none", *views]))
        self.echo = echo or (lambda _line: None)
        self.outputs: dict[str, Any] = {}

    @cached_property
    def templates(self) -> Any:
        """The run's :class:`~analysis.data.TemplateSet`."""
        from ..data import load_templates

        return load_templates(self._templates)

    @property
    def view_names(self) -> list[str]:
        from ..data import get_perturbation

        return list(dict.fromkeys(get_perturbation(v).name for v in self._views))

    def images(self, views: Iterable[str] = ()) -> dict[str, Any]:
        """Image features per view (``ImageFeatures``: features, valid, skipped), all the run's views at once."""
        from ..data import get_perturbation

        wanted = [get_perturbation(v).name for v in ["none", *views]]
        missing = [v for v in wanted if v not in self._images]
        if missing:  # a view nobody declared: fetch it (and say so in the debug log) rather than fail
            self._images.update(self.cache.image_views(self.model, self.dataset, missing))
        return {v: self._images[v] for v in dict.fromkeys(wanted)}

    @cached_property
    def _images(self) -> dict[str, Any]:
        return self._once("images", lambda: dict(self.cache.image_views(self.model, self.dataset, self.view_names)))

    def _once(self, what: str, build: Callable[[], Any]) -> Any:
        """``build()``, but a user-facing failure (a diverged model, unreadable data) is kept and raised again
        for every later task, instead of encoding everything once more to fail the same way."""
        from .._checks import ClipauditError

        failed = self.__dict__.setdefault("_failed", {})
        if what in failed:
            raise failed[what]
        try:
            return build()
        except ClipauditError as err:
            failed[what] = err
            raise

    @cached_property
    def state(self) -> Any:
        """The :class:`~analysis.classifier.ClassifierState` (built on first use, then shared)."""
        return self._once("state", self._build_state)

    def _build_state(self) -> Any:
        from .._checks import ClipauditError
        from ..classifier import ClassifierState

        if not self.dataset.classnames:
            raise ClipauditError(f"Dataset {self.dataset.name!r} has no class names: zero-shot classification "
                                 "needs them (give --classnames).")
        tset = self.templates
        per_template = self.cache.class_embeddings(self.model, self.dataset.classnames, tset)
        name_only = self.cache.class_embeddings(self.model, self.dataset.classnames, "name_only")
        return ClassifierState.from_arrays(
            self.images(self.view_names), self.dataset.labels, self.dataset.classnames,
            per_template=per_template, name_only=name_only, scale=self.model.logit_scale,
            bias=self.model.logit_bias, templates=tset.name, per_class_prompts=tset.per_class is not None)

    def output(self, task: str) -> Any:
        """The typed value task ``task`` returned earlier in this run, or None if it did not run (or failed)."""
        return self.outputs.get(task)
