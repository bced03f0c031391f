"""Where a training batch comes from: pixels of a dataset's images, or rows of cached tower features.

A source gives the image side of each batch for some image indices (:meth:`_Source.images`) and the text
side for caption ids (:meth:`_Source.texts`); :func:`analysis.train.loop.fit` draws the indices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["FeatureSource", "ImageSource"]

log = logging.getLogger(__name__)


class _Source:
    """Gives the image side of a batch for some image indices, and the text side for caption ids."""

    def images(self, index_batches: Sequence[np.ndarray]) -> Iterator[tuple[Any, np.ndarray]]:
        raise NotImplementedError

    def texts(self, caption_ids: np.ndarray) -> Any:
        raise NotImplementedError


class _FeatureSource(_Source):
    """Cached image features; cached text features, or (``text=None``) the caption strings themselves."""

    def __init__(self, image: torch.Tensor, text: torch.Tensor | None, device: torch.device,
                 captions: Sequence[str] = ()) -> None:
        self.image, self.device = image.to(device), device
        self.text = None if text is None else text.to(device)
        self.captions = captions

    def images(self, index_batches):
        for idx in index_batches:
            yield self.image[torch.as_tensor(idx, device=self.device)], idx

    def texts(self, caption_ids):
        if self.text is None:
            return [self.captions[int(i)] for i in caption_ids]
        return self.text[torch.as_tensor(caption_ids, device=self.device)]


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, dataset: Any, preprocess: Callable) -> None:
        self.dataset, self.preprocess = dataset, preprocess

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int]:
        try:
            return self.preprocess(self.dataset.load_image(int(i))), int(i)
        except OSError as err:
            log.warning("Skipping unreadable image %s (%s).", self.dataset.describe(int(i)), err)
            return None, int(i)


def _collate(items):
    ok = [(x, i) for x, i in items if x is not None]
    bad = np.array([i for x, i in items if x is None], dtype=np.int64)
    images = torch.stack([x for x, _ in ok]) if ok else None
    return images, np.array([i for _, i in ok], dtype=np.int64), bad


class _ImageSource(_Source):
    def __init__(self, dataset: Any, preprocess: Callable, tokens: torch.Tensor, device: torch.device,
                 num_workers: int = 0) -> None:
        self.data = _ImageDataset(dataset, preprocess)
        self.tokens, self.device, self.num_workers = tokens, device, num_workers
        self.skipped: set[str] = set()

    def images(self, index_batches):
        batches = [list(map(int, b)) for b in index_batches]
        loader = torch.utils.data.DataLoader(self.data, batch_sampler=batches, collate_fn=_collate,
                                             num_workers=self.num_workers)
        for images, valid, bad in loader:
            self.skipped.update(self.data.dataset.describe(int(i)) for i in bad)
            yield (None if images is None else images.to(self.device)), valid

    def texts(self, caption_ids):
        return self.tokens[torch.as_tensor(caption_ids)].to(self.device)


#: Public names of the two sources.
FeatureSource = _FeatureSource
ImageSource = _ImageSource
