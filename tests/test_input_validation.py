"""Bad inputs give a correct result or one line naming the input (issue 12, "input validation in one place").

Each case is fed through the command line (``analysis.cli.main``) or the Python API and asserts either the
right result or exit code 2 with a single ``clipaudit CMD: error: ...`` line that names the file, row, option
or class and says how to fix it, and no traceback.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from analysis import ClipauditError
from analysis.cli import main
from analysis.data import create_dataset, load_templates, open_rgb

NAMES = ["apple", "bag", "cat"]


# ----------------------------------------------------------------------------------------------- helpers
def _images(root, n_per_class=3, names=NAMES):
    """``n_per_class`` random PNGs per class under ``root``; returns [(file name, class index), ...]."""
    from conftest import make_image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for c, name in enumerate(names):
        for i in range(n_per_class):
            file = f"{name}{i}.png"
            make_image(rng, (60 * c + 30, 120, 200 - 50 * c)).save(root / file)
            out.append((file, c))
    return out


def _csv(path, rows, header="path,label"):
    path.write_text("\n".join([header, *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


@pytest.fixture()
def data(tmp_path):
    """A folder with 3 classes x 3 images, its class-names file and a clean integer-label manifest."""
    root = tmp_path / "data"
    files = _images(root)
    (tmp_path / "names.txt").write_text("\n".join(NAMES) + "\n")
    _csv(root / "int.csv", files)
    return root, files, tmp_path / "names.txt"


def _run(tmp_path, capsys, *args):
    """Run ``clipaudit zeroshot`` with the tiny model; returns (exit code, stdout, stderr).

    A ``--device`` or ``-m`` in ``args`` overrides the default (argparse keeps the last).
    """
    argv = ["zeroshot", "-m", "clipaudit-tiny-vit", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
            "--results-dir", str(tmp_path / "results"), "--templates", "photo", "-q", *map(str, args)]
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code, err, *needles):
    """Exit 2, exactly one ``clipaudit zeroshot: error:`` line (log warnings aside), no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("WARNING", "INFO", "DEBUG"))]
    assert len(lines) == 1 and lines[0].startswith("clipaudit zeroshot: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------ labels / class list
def test_label_typo_with_classnames_names_the_row_and_the_closest_class(data, tmp_path, capsys):
    root, files, names = data
    rows = [(f, "bagg" if (f, c) == files[4] else NAMES[c]) for f, c in files]
    manifest = _csv(root / "typo.csv", rows)
    code, _, err = _run(tmp_path, capsys, "-d", manifest, "--classnames", names)
    _one_line_error(code, err, "typo.csv:6:", "'bagg'", "Did you mean 'bag'")


def test_label_typo_without_classnames_is_refused_as_a_likely_typo(tmp_path, capsys):
    root = tmp_path / "data"
    files = _images(root, n_per_class=5)
    rows = [(f, "bagg" if f == "bag0.png" else NAMES[c]) for f, c in files]  # bag x4, bagg x1
    code, _, err = _run(tmp_path, capsys, "-d", _csv(root / "typo.csv", rows))
    _one_line_error(code, err, "typo.csv", "'bagg' (1 image) looks like a typo of 'bag' (4 images)", "--classnames")
    # both names really meant: an explicit class list turns the guess off and keeps 4 classes
    (tmp_path / "four.txt").write_text("apple\nbag\nbagg\ncat\n")
    ds = create_dataset(str(root / "typo.csv"), classnames=str(tmp_path / "four.txt"))
    assert ds.classnames == ["apple", "bag", "bagg", "cat"] and np.bincount(ds.labels).tolist() == [5, 4, 1, 5]


def test_class_folder_typo_is_refused(tmp_path, capsys):
    root = tmp_path / "folder"
    for name, n in (("apple", 4), ("bag", 4), ("bagg", 1)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(root / name / f"{i}.png")
    code, _, err = _run(tmp_path, capsys, "-d", root)
    _one_line_error(code, err, "class folder 'bagg' (1 image) looks like a typo of 'bag'")


def test_float_written_labels_are_the_integer_classes(data, tmp_path, capsys):
    root, files, names = data
    as_float = _csv(root / "float.csv", [(f, f"{c}.0") for f, c in files])
    ds_int = create_dataset(str(root / "int.csv"), classnames=str(names))
    ds_float = create_dataset(str(as_float), classnames=str(names))
    assert ds_float.classnames == NAMES  # no extra classes '0.0', '1.0', ...
    assert ds_float.labels.tolist() == ds_int.labels.tolist() == [c for _, c in files]
    jsonl = root / "float.jsonl"
    jsonl.write_text("".join(json.dumps({"path": f, "label": float(c)}) + "\n" for f, c in files))
    assert create_dataset(str(jsonl), classnames=str(names)).labels.tolist() == [c for _, c in files]
    # the same numbers through the CLI: exit 0 and identical metrics to the integer manifest
    results = []
    for manifest in (root / "int.csv", as_float):
        code, out, err = _run(tmp_path, capsys, "-d", manifest, "--classnames", names)
        assert code == 0, err
        results.append([ln for ln in out.splitlines() if ln.strip().startswith(("acc", "mean_per_class"))])
    assert results[0] and results[0] == results[1]


@pytest.mark.parametrize("bad, needle", [
    ("-3", "class index '-3' is out of range"),
    ("", "empty label"),
    ("2.5", "label '2.5' is not an integer class index"),
    ("7", "class index '7' is out of range: --classnames"),
])
def test_bad_label_names_the_file_and_line(data, tmp_path, capsys, bad, needle):
    root, files, names = data
    rows = [(f, bad if i == 4 else c) for i, (f, c) in enumerate(files)]
    manifest = _csv(root / "bad.csv", rows)
    code, _, err = _run(tmp_path, capsys, "-d", manifest, "--classnames", names)
    _one_line_error(code, err, "bad.csv:6:", needle)


def test_class_indices_without_class_names_ask_for_them(data):
    root, _, _ = data
    with pytest.raises(ClipauditError, match=r"int\.csv has class indices as labels .*int\.csv:2 .* pass "
                                             r"--classnames FILE"):
        create_dataset(str(root / "int.csv"))


def test_one_image_with_two_labels_is_refused(data):
    root, files, _ = data
    rows = [(f, NAMES[c]) for f, c in files] + [(files[0][0], "cat")]
    with pytest.raises(ClipauditError, match=r"twice\.csv:11: image 'apple0\.png' is labelled 'cat' here but "
                                             r"'apple' on line 2"):
        create_dataset(str(_csv(root / "twice.csv", rows)))


def test_empty_labels_are_accepted_in_a_caption_manifest(data):
    root, files, _ = data
    rows = [(f, NAMES[c] if i else "", f"photo {i}") for i, (f, c) in enumerate(files)]
    ds = create_dataset(str(_csv(root / "caps.csv", rows, header="path,label,caption")))
    assert ds.labels.tolist()[:2] == [-1, 0] and ds.captions[0] == ["photo 0"]


# ------------------------------------------------------------------------------------- duplicate names
def test_duplicate_classnames_are_an_error_naming_them(data, tmp_path, capsys):
    root, _, _ = data
    (tmp_path / "dup.txt").write_text("cat\ncat\ncat\n")
    code, _, err = _run(tmp_path, capsys, "-d", root / "int.csv", "--classnames", tmp_path / "dup.txt")
    _one_line_error(code, err, "--classnames", "dup.txt", "duplicate class names: 'cat' at classes [0, 1, 2]",
                    "allow_duplicate_classnames=True")
    ds = create_dataset(str(root / "int.csv"), classnames=str(tmp_path / "dup.txt"), allow_duplicate_classnames=True)
    assert ds.classnames == ["cat"] * 3


def test_imagenet_folders_keep_their_repeated_names(tmp_path):
    """ImageNet-1k's curated names repeat 'missile' and 'sunglasses': its loaders allow it by themselves."""
    from collections import Counter

    for wnid in ("n01440764", "n02012849"):
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / wnid / "a.JPEG")
    ds = create_dataset(str(tmp_path))
    repeated = sorted(n for n, k in Counter(ds.classnames).items() if k > 1)
    assert repeated == ["missile", "sunglasses"] and len(ds.classnames) == 1000
    assert ds.subset([0]).allow_duplicate_classnames


# ------------------------------------------------------------------------------------ one class / limit
def test_one_class_data_is_refused_with_a_reason(data, tmp_path, capsys):
    root, files, _ = data
    manifest = _csv(root / "one.csv", [(f, "apple") for f, _ in files])
    code, _, err = _run(tmp_path, capsys, "-d", manifest)
    _one_line_error(code, err, "Dataset 'one'", "'apple'", "meaningless with one class")
    assert len(create_dataset(str(manifest), min_classes=1)) == len(files)


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_limit_below_one_is_one_line(data, tmp_path, capsys, limit):
    root, _, names = data
    code, _, err = _run(tmp_path, capsys, "-d", root / "int.csv", "--classnames", names, "--limit", limit)
    _one_line_error(code, err, "--limit", limit)


# ----------------------------------------------------------------------------------------- image decoding
def test_16_bit_greyscale_png_matches_its_8_bit_version(tmp_path):
    ramp16 = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp16).save(tmp_path / "g16.png")
    ramp8 = np.rint(ramp16 / 257).astype(np.uint8)
    Image.fromarray(ramp8).save(tmp_path / "g8.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    rgb16, rgb8 = np.asarray(open_rgb(tmp_path / "g16.png")), np.asarray(open_rgb(tmp_path / "g8.png"))
    assert rgb16.shape == (48, 64, 3) and rgb16.dtype == np.uint8
    assert np.abs(rgb16.astype(int) - rgb8.astype(int)).max() <= 1
    assert rgb16.min() == 0 and rgb16.max() == 255 and (rgb16 == 255).mean() < 0.01  # not white
    # the same 16-bit data held as a 32-bit 'I' image (as some TIFFs open) is scaled the same way
    Image.fromarray(ramp16.astype(np.int32)).save(tmp_path / "g32.tif")
    assert Image.open(tmp_path / "g32.tif").mode == "I"
    rgb32 = np.asarray(open_rgb(tmp_path / "g32.tif"))
    assert np.abs(rgb32.astype(int) - rgb8.astype(int)).max() <= 1


# --------------------------------------------------------------------------------------------- fingerprint
def test_fingerprint_sees_content_swapped_at_equal_size_and_mtime(tmp_path):
    root = tmp_path / "folder"
    for name, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for i in range(2):  # BMP: uncompressed, so every file has the same size
            Image.new("RGB", (16, 16), colour).save(root / name / f"{i}.bmp")
    x, y = root / "a" / "0.bmp", root / "b" / "0.bmp"
    assert x.stat().st_size == y.stat().st_size and x.read_bytes() != y.read_bytes()
    before = create_dataset(str(root)).fingerprint()
    assert create_dataset(str(root)).fingerprint() == before  # stable
    times = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (x, y)]
    bx, by = x.read_bytes(), y.read_bytes()
    x.write_bytes(by)
    y.write_bytes(bx)
    for p, ns in zip((x, y), times):
        os.utime(p, ns=ns)
    assert [(p.stat().st_size, p.stat().st_mtime_ns) for p in (x, y)] == [(len(bx), times[0][1]),
                                                                          (len(by), times[1][1])]
    assert create_dataset(str(root)).fingerprint() != before
    x.write_bytes(bx)  # back as it was: the same fingerprint again (content, not times)
    y.write_bytes(by)
    assert create_dataset(str(root)).fingerprint() == before


def test_fingerprint_of_large_files_hashes_both_ends(tmp_path):
    from analysis.data.files import FINGERPRINT_BYTES, file_digest

    data = bytearray(os.urandom(3 * FINGERPRINT_BYTES))
    path = tmp_path / "big.png"
    path.write_bytes(bytes(data))
    first = file_digest(path)
    data[-1] ^= 0xFF  # last byte
    path.write_bytes(bytes(data))
    second = file_digest(path)
    data[0] ^= 0xFF  # first byte
    path.write_bytes(bytes(data))
    assert len({first, second, file_digest(path)}) == 3 and first[0] == 3 * FINGERPRINT_BYTES


# ------------------------------------------------------------------------ files and options: one line each
def test_classnames_invalid_json_and_missing_file(data, tmp_path, capsys):
    root, _, _ = data
    (tmp_path / "bad.json").write_text('["apple", ')
    code, _, err = _run(tmp_path, capsys, "-d", root / "int.csv", "--classnames", tmp_path / "bad.json")
    _one_line_error(code, err, "--classnames", "bad.json", "not valid JSON")
    code, _, err = _run(tmp_path, capsys, "-d", root / "int.csv", "--classnames", tmp_path / "nosuch.txt")
    _one_line_error(code, err, "--classnames", "nosuch.txt", "does not exist")
    (tmp_path / "shape.json").write_text('{"a": [1, 2]}')
    code, _, err = _run(tmp_path, capsys, "-d", root / "int.csv", "--classnames", tmp_path / "shape.json")
    _one_line_error(code, err, "shape.json", "expected a JSON list of class names")


def test_non_utf8_manifest_names_the_file_and_line(data, tmp_path, capsys):
    root, files, _ = data
    text = "path,label\n" + "".join(f"{f},{NAMES[c]}\n" for f, c in files) + "x.png,caf\xe9\n"
    (root / "latin1.csv").write_bytes(text.encode("latin-1"))
    code, _, err = _run(tmp_path, capsys, "-d", root / "latin1.csv")
    _one_line_error(code, err, "latin1.csv", "not UTF-8", "byte 0xe9 on line 11", "Save it as UTF-8")
    (root / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("x.png,caf\xe9\n", "").encode())
    assert create_dataset(str(root / "bom.csv")).classnames == NAMES  # Excel's UTF-8 with BOM is fine


@pytest.mark.parametrize("template", ["a photo of a {} }", "a { photo of a {}", "{} and {}", "a photo"])
def test_bad_template_is_one_line(data, tmp_path, capsys, template):
    root, _, names = data
    (tmp_path / "t.txt").write_text(template + "\n")
    code, _, err = _run(tmp_path, capsys, "-d", root / "int.csv", "--classnames", names,
                        "--templates", tmp_path / "t.txt")
    _one_line_error(code, err, "t.txt", repr(template))


def test_templates_keep_escaped_braces_and_check_direct_sets():
    from analysis.data import TemplateSet

    assert load_templates("photo").templates == ("a photo of a {}.",)
    braces = TemplateSet("b", ("{{literal}} {c}",))
    assert braces.prompts(["cat"]) == [["{literal} cat"]]
    with pytest.raises(ClipauditError, match=r"Prompt set 'x': template 'a \{\} \}' is not a valid template"):
        TemplateSet("x", ("a {} }",))


def test_local_dir_with_pickled_weights_is_refused_in_one_line(data, tmp_path, capsys):
    import fractions

    import open_clip
    import torch

    folder = tmp_path / "pickled"
    folder.mkdir()
    cfg = {"model_cfg": open_clip.get_model_config("clipaudit-tiny-vit"), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.save({"x": fractions.Fraction(1, 3)}, folder / "open_clip_pytorch_model.bin")
    root, _, names = data
    code, _, err = _run(tmp_path, capsys, "-m", f"local-dir:{folder}", "-d", root / "int.csv", "--classnames", names)
    _one_line_error(code, err, "open_clip_pytorch_model.bin", "fractions.Fraction",
                    "must be a safetensors file or a checkpoint that torch.load(weights_only=True) can read")


@pytest.mark.parametrize("device", ["nosuch", "gpu", "cuda:x"])
def test_unknown_device_lists_the_accepted_ones(data, tmp_path, capsys, device):
    root, _, names = data
    code, _, err = _run(tmp_path, capsys, "--device", device, "-d", root / "int.csv", "--classnames", names)
    _one_line_error(code, err, f"--device {device!r}", "cpu, cuda, cuda:N, mps, auto")


def test_absent_cuda_device_is_one_line(data, tmp_path, capsys):
    import torch

    root, _, names = data
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    code, _, err = _run(tmp_path, capsys, "--device", f"cuda:{count}", "-d", root / "int.csv", "--classnames", names)
    _one_line_error(code, err, f"--device 'cuda:{count}'", "Use --device cpu or auto")


def test_a_label_that_is_a_class_name_is_never_read_as_an_index():
    """Found by fuzzing: class names '0' and '00' with labels written as those names made every image class 0."""
    from analysis.data.validation import parse_labels

    labels, names = parse_labels(["0", "00", "00", "0"], ["0", "00"], source="m.jsonl")
    assert names == ["0", "00"] and labels.tolist() == [0, 1, 1, 0]
    labels, _ = parse_labels(["1", "0"], ["a", "b"], source="m.csv")  # not names: class indices
    assert labels.tolist() == [1, 0]
