"""Cost of the mutual-knowledge pipeline vs the image-encoder passes it needs (issue 6 target: <= ~1.5x).

Needed passes for one class: the originals (N images) plus 3 prompts x concepts per image and method.
The script runs the pipeline on N images of one class with a cold cache, counts every image sent through
the image tower, times them, and separately times a plain batched encode of exactly the needed number
of images. Reported ratio = pipeline wall time / time of the needed encoder passes.

usage:
  python benchmarks/bench_concepts.py --model ViT-B-16 --images 50          # random-init ViT-B/16, 224 px
  python benchmarks/bench_concepts.py --model clipaudit-tiny-rn --images 20 --dataset bundled
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np
import torch


class CountingModel:
    """Delegates to a ClipModel; counts and times images through ``encode_image`` and ``patch_tokens``."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.images = {"encode_image": 0, "patch_tokens": 0}
        self.seconds = {"encode_image": 0.0, "patch_tokens": 0.0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _timed(self, name: str, images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        t = time.perf_counter()
        out = getattr(self._model, name)(images, **kwargs)
        self.seconds[name] += time.perf_counter() - t
        self.images[name] += len(images)
        return out

    def encode_image(self, images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self._timed("encode_image", images, **kwargs)

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self._timed("patch_tokens", images)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from analysis.cache import EmbeddingCache
    from analysis.concepts.descriptors import load_descriptors
    from analysis.concepts.pipeline import ConceptConfig, input_size, run_concepts
    from analysis.data import create_dataset
    from analysis.models import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--dataset", default="bundled")
    parser.add_argument("--class-index", type=int, default=1)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = CountingModel(load_model(args.model, args.pretrained))
    dataset = create_dataset(args.dataset)
    cname = dataset.classnames[args.class_index]
    cache = EmbeddingCache(tempfile.mkdtemp(prefix="bench-concepts-"), progress=False, batch_size=args.batch_size)
    config = ConceptConfig(batch_size=args.batch_size)

    t0 = time.perf_counter()
    result = run_concepts(model, dataset, cache, load_descriptors("fashion-mnist"), classes=[cname],
                          images_per_class=args.images, templates="openai_imagenet", config=config)
    total = time.perf_counter() - t0

    n = int(result.per_image["index"].nunique())
    needed = n + 3 * int(result.per_image["n_concepts"].sum())
    height, width = input_size(model)
    dummy = torch.randn(needed, 3, height, width)
    t0 = time.perf_counter()
    with torch.no_grad():
        for b in range(0, needed, args.batch_size):
            model._model.encode_image(dummy[b:b + args.batch_size])
    needed_s = time.perf_counter() - t0

    run_images = sum(model.images.values())
    report = {
        "model": args.model, "class": cname, "images": n, "input": [height, width],
        "needed_encoder_images": needed, "run_encoder_images": run_images,
        "encoder_images_by_call": model.images, "encoder_seconds_by_call": {k: round(v, 2) for k, v in
                                                                          model.seconds.items()},
        "pipeline_seconds": round(total, 2), "needed_encoder_seconds": round(needed_s, 2),
        "ratio_time": round(total / needed_s, 3), "ratio_passes": round(run_images / needed, 3),
        "stage_seconds": {k: round(v, 2) for k, v in result.info["timings_s"].items()},
        "torch_threads": torch.get_num_threads(), "load_average": list(np.round(_loadavg(), 2)),
    }
    print(json.dumps(report, indent=2))
    return report


def _loadavg() -> tuple[float, ...]:
    import os

    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


if __name__ == "__main__":
    main()
