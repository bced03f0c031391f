"""Fine-tuning the LiT text tower: :class:`LitTextEncoder` (MiniLM with selected layers trainable).

LiT with only the image tower locked: a private copy of MiniLM whose parameters selected by ``trainable``
(``"all"``: embeddings + the 6 transformer layers; ``"last:N"``: the last N layers) are trained with the
heads. :func:`parse_train_text` normalises the choice (``--train-text``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..._checks import ClipauditError
from ..base import state_dict_sha256
from .towers import _sentence_embedding, _tokenize, get_towers

__all__ = ["LitTextEncoder", "parse_train_text", "TRAIN_TEXT_CHOICES"]

#: What ``trainable`` / ``--train-text`` accepts (besides "none").
TRAIN_TEXT_CHOICES = "'all' or 'last:N' (N = 1..6 transformer layers)"


def parse_train_text(value: str | None, n_layers: int = 6) -> str | None:
    """Normalise a text-tower training choice: ``None``/"none" -> None, "all", or "last:N" (1 <= N <= n_layers).

    Raises
    ------
    ClipauditError
        Anything else (names the accepted forms and the value received).
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    text = str(value).strip().lower()
    if text == "all":
        return "all"
    match = re.fullmatch(r"last:(\d+)", text)
    if match and 1 <= int(match.group(1)) <= n_layers:
        return f"last:{int(match.group(1))}"
    raise ClipauditError(f"train_text must be 'none', 'all' or 'last:N' with 1 <= N <= {n_layers} (MiniLM has "
                         f"{n_layers} transformer layers), got {value!r}.")


class _Tensors:
    """A dict of tensors seen as a module by :func:`state_dict_sha256` / ``describe_state_dict_mismatch``."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self._state = dict(state)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


class LitTextEncoder(nn.Module):
    """The MiniLM text tower as a trainable module: texts -> sentence embeddings (B, 384), L2-normalised.

    The same features as :meth:`LitTowers.text_features` (mean pooling over the attention mask, then L2
    normalisation), with gradients for the parameters selected by ``trainable``; the others keep
    ``requires_grad=False``. Build one with :meth:`from_frozen` (a private copy of the shared frozen tower).

    Parameters
    ----------
    text_tower : nn.Module
        A ``transformers`` ``BertModel`` (all-MiniLM-L6-v2); modified in place (``requires_grad`` flags).
    tokenizer
        Its tokenizer.
    trainable : {"all", "last:N"}, default="all"
        "all": every parameter except the BERT pooler (unused by mean pooling); "last:N": the last N
        transformer layers (``encoder.layer.{L-N..L-1}``). Mean pooling has no parameters.
    """

    def __init__(self, text_tower: nn.Module, tokenizer: Any, trainable: str = "all") -> None:
        super().__init__()
        n_layers = int(text_tower.config.num_hidden_layers)
        spec = parse_train_text(trainable, n_layers)
        if spec is None:
            raise ClipauditError(f"trainable must be {TRAIN_TEXT_CHOICES}; for a frozen text tower use the "
                                 "cached features (no LitTextEncoder), got 'none'.")
        self.trainable = spec
        self.text_tower = text_tower
        self.tokenizer = tokenizer
        if spec == "all":
            def chosen(name: str) -> bool:
                return not name.startswith("pooler.")
        else:
            layers = tuple(f"encoder.layer.{i}." for i in range(n_layers - int(spec.split(":")[1]), n_layers))

            def chosen(name: str) -> bool:
                return name.startswith(layers)
        self.trained_names = [n for n, _ in text_tower.named_parameters() if chosen(n)]
        for name, param in text_tower.named_parameters():
            param.requires_grad_(chosen(name))

    @classmethod
    def from_frozen(cls, trainable: str = "all", device: str | torch.device = "cpu") -> LitTextEncoder:
        """A private copy of the shared frozen MiniLM (:func:`get_towers`), ready to train ``trainable``."""
        towers = get_towers(device)
        return cls(copy.deepcopy(towers.text_tower), towers.tokenizer, trainable)

    @property
    def device(self) -> torch.device:
        return next(self.text_tower.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """As :meth:`LitTowers.tokenize`."""
        return _tokenize(self.tokenizer, texts)

    def forward(self, texts: Sequence[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Texts (tokenised here, per call) or tokens -> (B, 384) unit-norm sentence embeddings."""
        tokens = texts if isinstance(texts, Mapping) else self.tokenize(texts)
        return _sentence_embedding(self.text_tower, {k: v.to(self.device) for k, v in tokens.items()})

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained parameters only, by ``BertModel`` state-dict name (detached, CPU, contiguous)."""
        params = dict(self.text_tower.named_parameters())
        return {n: params[n].detach().cpu().contiguous() for n in self.trained_names}

    def identity(self) -> dict[str, Any]:
        """What was trained and the SHA-256 of the trained tensors (joins :func:`towers_identity`)."""
        return {"trainable": self.trainable, "sha256": state_dict_sha256(_Tensors(self.trained_state_dict()))}
