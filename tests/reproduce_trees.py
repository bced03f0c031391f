"""Small generated ImageNet-family trees for the reproduce tests (a few wnid folders of tiny images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: three ImageNet-1k classes, and three that are also ImageNet-R and ImageNet-A classes
VAL_WNIDS = ("n01440764", "n01443537", "n01484850")


def save_images(folder: Path, n: int, seed: int, prefix: str = "img", ext: str = ".JPEG") -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        arr = np.clip(rng.integers(0, 255, 3)[None, None, :] + rng.integers(-40, 40, (20, 20, 3)), 0, 255)
        path = folder / f"{prefix}_{i:04d}{ext}"
        Image.fromarray(arr.astype(np.uint8)).save(path, format="JPEG" if ext.upper() == ".JPEG" else None)
        out.append(path)
    return out


def wnid_tree(root: Path, wnids: tuple[str, ...] | list[str], per_class: int = 3) -> Path:
    for k, w in enumerate(wnids):
        save_images(root / w, per_class, seed=k)
    return root


def repro_setup(tmp: Path, tiny_vit, ge: dict):
    """An ImageNet-family tree under ``tmp/data`` whose val images are half predicted right by ``tiny_vit``,
    plus a ReproContext over it (one cache, two templates, a small descriptor pool; ``ge``: GeOptions fields)."""
    import torch

    from analysis.cache import EmbeddingCache
    from analysis.data.imagenet_family import imagenet_classnames, imagenet_wnids, subset_wnids
    from analysis.ensemble import ensemble_weights
    from analysis.reproduce import DemoOptions, GeOptions, ModelEntry, MutualKnowledgeOptions, ReproContext

    cache = EmbeddingCache(tmp / "cache", progress=False, batch_size=16)
    name_w = ensemble_weights(cache.class_embeddings(tiny_vit, list(imagenet_classnames()), "name_only"))
    stage = save_images(tmp / "stage", 12, seed=3)
    from PIL import Image

    with torch.no_grad():
        x = torch.stack([tiny_vit.preprocess(Image.open(p).convert("RGB")) for p in stage])
        preds = (tiny_vit.encode_image(x).numpy() @ name_w.T).argmax(1)
    wnids = imagenet_wnids()
    val = tmp / "data" / "imagenet" / "val"
    for i, (p, pred) in enumerate(zip(stage, preds)):
        folder = val / wnids[pred if i % 2 == 0 else (pred + 1 + i) % 1000]
        folder.mkdir(parents=True, exist_ok=True)
        p.rename(folder / p.name)
    wnid_tree(tmp / "data" / "imagenet-r", list(subset_wnids("r")[:2]), per_class=2)
    (tmp / "two.txt").write_text("a photo of a {}.\na drawing of the {}.\n")
    (tmp / "desc.json").write_text('{"x": ["red fur", "a long tail", "scales", "a fin", "wheels", "a handle", '
                                   '"stripes", "a beak"]}')
    ctx = ReproContext([ModelEntry(tiny_vit, "ViT-B/16")], cache, root=str(tmp / "data"),
                       templates=str(tmp / "two.txt"), ge=GeOptions(**ge),
                       concepts=MutualKnowledgeOptions(descriptors=str(tmp / "desc.json"), n_classes=2,
                                                       images_per_class=3),
                       demo=DemoOptions(demo_dataset="bundled"))
    return ctx, tmp


def ours(result, **key):
    """The single row of ``result.comparison`` matching ``key``."""
    df = result.comparison
    for k, v in key.items():
        df = df[df[k] == v]
    assert len(df) == 1, (key, df)
    return df.iloc[0]

def direct(ctx, dataset, templates):
    """Accuracy of the ensemble of ``templates`` computed here from the cache (not via the pipelines)."""
    from analysis.ensemble import ensemble_weights

    model = ctx.models[0].model
    ds = ctx.dataset(dataset)
    feats = ctx.cache.image_features(model, ds).features
    w = ensemble_weights(ctx.cache.class_embeddings(model, ds.classnames, templates))
    return feats @ w.T, np.asarray(ds.labels)
