"""Fuzzing the inputs a user controls: bad image bytes, class names, labels, templates.

Each example must end in one of two ways: a correct result, or a ClipauditError (one line at the CLI, exit 2).
Any other exception is a bug (a traceback for the user, or worse, a silently wrong number).
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from analysis._checks import ClipauditError  # noqa: E402

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _cache():
    from analysis.cache import EmbeddingCache

    return EmbeddingCache(progress=False, enabled=False, batch_size=8)


def _folder(root: Path, bad: bytes | None = None, suffix: str = ".png") -> Path:
    rng = np.random.default_rng(0)
    for name, colour in (("red", (220, 30, 30)), ("blue", (40, 60, 230))):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            make_image(rng, colour).save(root / name / f"{i}.png")
    if bad is not None:
        (root / "red" / f"bad{suffix}").write_bytes(bad)
    return root


def _png_header_then(data: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + data


@FUZZ
@given(data=st.one_of(st.binary(max_size=600), st.binary(max_size=600).map(_png_header_then)),
       suffix=st.sampled_from([".png", ".jpg", ".gif", ".tif"]))
def test_bad_image_bytes_are_skipped_and_listed(tiny_vit, data, suffix):
    from analysis.data import create_dataset
    from analysis.tasks._api import run_task

    with tempfile.TemporaryDirectory() as tmp:
        ds = create_dataset(str(_folder(Path(tmp), data, suffix)))
        result = run_task("zeroshot", tiny_vit, ds, _cache(), templates="photo")
    m = result.metrics
    assert m["n_images"] + m["n_skipped"] == 5
    assert 0.0 <= m["acc1"] <= 1.0
    assert all(np.isfinite(v) for v in m.values() if isinstance(v, float))


names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@FUZZ
@given(classes=st.lists(names, min_size=2, max_size=3, unique=True), typo=st.booleans())
def test_random_class_names_and_labels(tiny_vit, classes, typo):
    """Manifest labels are class names: a known name gives a correct run; an unknown one is a clear error."""
    from analysis.data import create_dataset
    from analysis.tasks._api import run_task

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(1)
        lines = []
        for k, name in enumerate(classes):
            for i in range(2):
                make_image(rng, (40 * k, 100, 200 - 40 * k)).save(root / f"{k}_{i}.png")
                lines.append({"path": f"{k}_{i}.png", "label": name})
        if typo:
            lines[0]["label"] = classes[0] + "\u00a7x"
        (root / "m.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n", encoding="utf-8")
        names_file = root / "names.json"
        names_file.write_text(json.dumps(classes), encoding="utf-8")
        try:
            ds = create_dataset(str(root / "m.jsonl"), classnames=str(names_file))
        except ClipauditError as err:
            assert typo or not all(c.strip() for c in classes), err  # only a typo (or a blank name) may fail
            assert "\n" not in str(err).strip() or any("\n" in c for c in classes)
            return
        assert not typo, "a label outside the class list must not become a new class"
        assert ds.classnames == classes and sorted(set(ds.labels.tolist())) == list(range(len(classes)))
        try:
            result = run_task("zeroshot", tiny_vit, ds, _cache(), templates="photo")
        except ClipauditError:
            return  # e.g. a name the tokenizer cannot encode: said in one line
        assert 0.0 <= result.metrics["acc1"] <= 1.0


@FUZZ
@given(label=st.one_of(st.sampled_from(["3.0", "-3", "", " ", "1e0", "2", "x", "0.5", "١"]),
                       st.text(max_size=6)))
def test_random_label_cells(label):
    """A CSV label cell is a class index or a clear error naming the row; never a new class, never a float class."""
    from analysis.data import create_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(2)
        rows = [["path", "label"]]
        for i, lab in enumerate(["0", "1", "2", "0"]):
            make_image(rng, (50 * i, 80, 120)).save(root / f"{i}.png")
            rows.append([f"{i}.png", lab])
        make_image(rng, (1, 2, 3)).save(root / "x.png")
        rows.append(["x.png", label])
        with open(root / "m.csv", "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)
        try:
            ds = create_dataset(str(root / "m.csv"), classnames=["a", "b", "c"])
        except ClipauditError as err:
            assert "m.csv" in str(err) or "label" in str(err).lower(), err
            return
        assert len(ds.classnames) == 3 and set(ds.labels.tolist()) <= {0, 1, 2}
        assert ds.labels.dtype.kind == "i"


@FUZZ
@given(template=st.text(max_size=40))
def test_random_templates(template):
    """A template file is accepted only with exactly one class placeholder; anything else is one clear error."""
    from analysis.data import load_templates

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.json"
        path.write_text(json.dumps([template]), encoding="utf-8")
        try:
            tset = load_templates(str(path))
        except ClipauditError as err:
            assert str(err).strip(), "an empty error message"
            return
        assert all(t.format("cat").count("cat") >= 1 for t in tset.templates)
        assert [t.count("{}") for t in tset.templates] == [1] * len(tset.templates)
