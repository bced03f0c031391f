"""What a training run is: :class:`TrainConfig` (hyper-parameters, saved in checkpoints), :class:`TrainJob`
(everything ``clipaudit train`` takes: mode, data, captions, model, output) and :class:`TrainResult`.

No torch here: the CLI builds a :class:`TrainJob` from its arguments before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._checks import ClipauditError, check_choice, check_positive_int

__all__ = ["TrainConfig", "TrainJob", "TrainResult", "LOSSES", "MODES", "MODE_OPTIONS", "MODE_DEFAULTS",
           "DEFAULT_DATASET", "TEXT_LR", "AUTO"]

LOSSES = ("infonce", "siglip")
MODES = ("lit", "scratch")
#: Default training data: Fashion-MNIST's train split (Debian's ``dataset-fashion-mnist``, or a download).
DEFAULT_DATASET = "fashion-mnist"
#: Default learning rate of a fine-tuned text tower (pretrained MiniLM: small steps).
TEXT_LR = 2e-5
#: ``--synonyms``/``--kind-of`` value meaning "the file shipped for the dataset, if any".
AUTO = "auto"

#: Options that only one mode uses: field -> (mode, CLI option). Giving one in the other mode is an error.
MODE_OPTIONS: dict[str, tuple[str, str]] = {
    "model": ("scratch", "--model"),
    "workers": ("scratch", "--workers"),
    "embed_dim": ("lit", "--embed-dim"),
    "image_size": ("lit", "--image-size"),
    "name": ("lit", "--name"),
    "train_text": ("lit", "--train-text"),
    "cache_dir": ("lit", "--cache-dir"),
    "use_cache": ("lit", "--no-cache"),
    "encode_batch_size": ("lit", "--encode-batch-size"),
}
#: Their values when not given (None in a :class:`TrainJob` means "not given").
MODE_DEFAULTS: dict[str, Any] = {
    "model": "clipaudit-tiny-vit", "workers": 0, "embed_dim": 256, "image_size": 224, "name": None,
    "train_text": None, "cache_dir": None, "use_cache": True, "encode_batch_size": 64,
}


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (saved in every checkpoint).

    Parameters
    ----------
    loss : {"infonce", "siglip"}, default="infonce"
    multi_positive : bool, default=False
        InfoNCE only: same-class pairs in a batch are positives, not negatives.
    epochs : int, default=1
    max_steps : int, optional
        Stop after this many optimizer steps (default: ``epochs`` full epochs).
    batch_size : int, default=64
        Global batch size (split evenly over processes).
    lr, weight_decay : float
        AdamW; weight decay is not applied to biases, norms, the logit scale and bias (as open_clip).
    text_lr : float, optional
        Learning rate of a trained text tower (parameters under the model's ``text_encoder.``), e.g. 2e-5
        for a pretrained MiniLM; default: ``lr``. Follows the same warm-up/cosine schedule. The log's
        ``lr`` column is the heads' rate.
    warmup_steps : int, default=0
        Linear warm-up, then cosine decay to 0 at the last step.
    seed : int, default=0
        Seeds the model initialisation, the data order and the caption draws.
    max_logit_scale : float, default=100
    checkpoint_every : int, default=0
        Also checkpoint every this many steps (0 = at the end of each epoch and at the end only).
    keep_checkpoints : int, default=2
        Older checkpoints are deleted.
    """

    loss: str = "infonce"
    multi_positive: bool = False
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    text_lr: float | None = None
    weight_decay: float = 0.1
    warmup_steps: int = 0
    seed: int = 0
    max_logit_scale: float = 100.0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2

    #: Fields a resumed run may change (to train longer, or checkpoint differently).
    RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "checkpoint_every", "keep_checkpoints"})

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, LOSSES)
        if self.multi_positive and self.loss != "infonce":
            raise ClipauditError("multi_positive is only available for loss='infonce', got loss='siglip'.")
        check_positive_int("epochs", self.epochs)
        check_positive_int("max_steps", self.max_steps, allow_none=True)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("keep_checkpoints", self.keep_checkpoints)
        for name in ("lr", "max_logit_scale"):
            if not getattr(self, name) > 0:
                raise ClipauditError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        if self.text_lr is not None and not self.text_lr > 0:
            raise ClipauditError(f"text_lr must be > 0 (or None: same as lr), got {self.text_lr!r}.")
        for name in ("weight_decay", "warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ClipauditError(f"{name} must be >= 0, got {getattr(self, name)!r}.")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainJob:
    """One ``clipaudit train`` run: what to train, on which data and captions, and where to write it.

    Parameters
    ----------
    out : str
        The model folder (also gets ``train_log.csv`` and ``checkpoints/``).
    mode : {"lit", "scratch"}, default="lit"
        ``lit``: heads (and optionally the MiniLM text tower) on frozen EfficientNet-Lite0 + MiniLM towers;
        ``scratch``: a small open_clip architecture trained from scratch.
    dataset : str, default="fashion-mnist"
        A :data:`analysis.data.DATASETS` name, a folder or a manifest.
    split : str, optional
        Default: the dataset's ``train`` split if it has one, else its default split.
    root, classnames : optional
        As :func:`analysis.data.create_dataset`.
    limit : int, optional
        Train on a stratified subset of about this many images (seeded by ``data_seed``).
    data_seed : int, default=0
    allow_test_data : bool, default=False
        Train on a dataset whose split is "test" (refused otherwise); the model folder then records
        ``trained_on_test_data: true``.
    templates : str, default="openai_imagenet"
        Prompt set that turns class names into captions (datasets without captions).
    synonyms, kind_of : str, default="auto"
        Caption vocabulary files; "auto": the one shipped for the dataset, "none": off.
    model, workers : optional
        Scratch mode only: open_clip architecture (default clipaudit-tiny-vit), image loading workers (0).
    embed_dim, image_size, name, train_text, cache_dir, use_cache, encode_batch_size : optional
        LiT mode only (defaults in :data:`MODE_DEFAULTS`). ``train_text``: "all" or "last:N" fine-tunes
        the text tower at ``config.text_lr`` (default :data:`TEXT_LR`).
    device : str, default="auto"
    resume : bool, default=False
    progress : bool, default=True
    config : TrainConfig
        Loss, schedule, batch size, seed...

    Raises
    ------
    ClipauditError
        An option of the other mode given (``MODE_OPTIONS``), ``text_lr`` without ``train_text``, an unknown
        mode, or a non-positive ``limit``.
    """

    out: str
    mode: str = "lit"
    dataset: str | None = DEFAULT_DATASET
    split: str | None = None
    root: str | None = None
    classnames: str | None = None
    limit: int | None = None
    data_seed: int = 0
    allow_test_data: bool = False
    templates: str = "openai_imagenet"
    synonyms: str | None = AUTO
    kind_of: str | None = AUTO
    model: str | None = None
    workers: int | None = None
    embed_dim: int | None = None
    image_size: int | None = None
    name: str | None = None
    train_text: str | None = None
    cache_dir: str | None = None
    use_cache: bool | None = None
    encode_batch_size: int | None = None
    device: str = "auto"
    resume: bool = False
    progress: bool = True
    config: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        given = [opt for key, (mode, opt) in MODE_OPTIONS.items()
                 if mode != self.mode and getattr(self, key) is not None]
        if given:
            other = "scratch" if self.mode == "lit" else "lit"
            one = len(given) == 1
            raise ClipauditError(f"{', '.join(given)} {'is' if one else 'are'} for --mode {other}, not --mode "
                                 f"{self.mode} (ignored there); drop {'it' if one else 'them'} or use --mode {other}.")
        check_positive_int("limit", self.limit, allow_none=True)
        if self.config.text_lr is not None and self.train_text in (None, "none"):
            raise ClipauditError(f"--text-lr {self.config.text_lr:g} needs --train-text all|last:N "
                                 "(the text tower is locked).")

    def get(self, key: str) -> Any:
        """A mode option's value, or its default (:data:`MODE_DEFAULTS`) when not given."""
        value = getattr(self, key)
        return MODE_DEFAULTS[key] if value is None else value


@dataclass
class TrainResult:
    """What a run produced: ``steps`` done, last step's ``loss``, the log and last checkpoint paths.

    :func:`analysis.train.main.train` also fills ``dataset`` (:meth:`ImageDataset.identity` of the training
    data) and ``trained_on_test_data``.
    """

    steps: int
    loss: float
    log_path: Path
    checkpoint: Path | None
    skipped: list[str] = field(default_factory=list)
    dataset: dict[str, Any] | None = None
    trained_on_test_data: bool | None = None
