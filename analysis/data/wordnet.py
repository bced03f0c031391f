"""WordNet through nltk, offline first: class names and ImageNet ids -> synsets, parents, children.

Where WordNet comes from (:func:`find_wordnet`, first hit wins):

1. ``nltk_data``: a ``corpora/wordnet`` folder or ``wordnet.zip`` on nltk's own data path
   (``NLTK_DATA``, ``~/nltk_data``, ...).
2. ``system``: a WordNet 3.0 database folder from the operating system (Debian/Ubuntu packages
   ``wordnet-base`` + ``wordnet-sense-index`` install it in ``/usr/share/wordnet``; ``$WNSEARCHDIR`` and
   ``$WNHOME/dict`` are honoured too). nltk only reads corpora inside its data path and needs a
   ``lexnames`` file those packages lack, so the files are hard-linked (or copied) into
   ``<cache>/nltk_data/corpora/wordnet/``, ``lexnames`` is written from :data:`LEXNAMES`, and
   ``<cache>/nltk_data`` is added to ``nltk.data.path``. ``<cache>`` is
   :func:`analysis.resources.default_cache_dir`.
3. ``download``: ``nltk.download('wordnet')`` into ``<cache>/nltk_data`` (needs network).
4. Otherwise one :class:`~analysis._checks.ClipauditError` says how to install WordNet.

Class -> synset mapping (:func:`map_classes`): ImageNet-1k classes by WordNet id (timm's
``imagenet_synsets.txt``, through :class:`timm.data.ImageNetInfo`); other datasets by an override file
(``prompts/wordnet_overrides/<dataset>.json``, see :func:`load_overrides`) and then by noun lemma lookup.
Classes with no noun synset, or several, are reported, not fatal.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .._checks import ClipauditError, check_choice, close_matches
from ..resources import data_dir, default_cache_dir

__all__ = [
    "LEXNAMES", "WordNetSource", "WordNode", "ClassNode", "ClassMapping", "find_wordnet", "load_wordnet",
    "wordnet_status", "imagenet_wnids", "synset_from_wnid", "wnid_of", "resolve_synset", "lookup_noun",
    "Override", "load_overrides", "find_override_file", "map_classes", "word_node", "class_nodes",
    "SYSTEM_WORDNET_DIRS", "INSTALL_HINT",
]

#: WordNet 3.0 lexicographer files (lexnames(5WN)): (name, syntactic category 1=noun 2=verb 3=adj 4=adv),
#: numbered 00-44 in this order.
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4),
    ("noun.Tops", 1), ("noun.act", 1), ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1),
    ("noun.body", 1), ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1),
    ("noun.feeling", 1), ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1),
    ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1),
    ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1),
    ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1),
    ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2),
    ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2), ("verb.creation", 2),
    ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2), ("verb.possession", 2),
    ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2),
    ("adj.ppl", 3),
)

SYSTEM_WORDNET_DIRS: tuple[str, ...] = (
    "/usr/share/wordnet", "/usr/local/WordNet-3.0/dict", "/usr/share/wordnet/dict",
)
#: Files a system WordNet folder must have for nltk's reader.
_REQUIRED = tuple(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")) + (
    "index.sense",
)
INSTALL_HINT = (
    "Install WordNet 3.0 with `apt-get install wordnet-base wordnet-sense-index` (Debian/Ubuntu; "
    "clipaudit then prepares it for nltk by itself), or, with network access, "
    "`python -c \"import nltk; nltk.download('wordnet')\"`."
)
_MARKER = "clipaudit-source.json"
_READERS: dict[tuple[str, str], Any] = {}


# --------------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class WordNetSource:
    """Where the WordNet in use comes from.

    ``kind`` is ``"nltk_data"``, ``"system"`` or ``"download"``; ``path`` is the nltk corpus root that is
    read; ``origin`` is the system folder it was prepared from (``system`` only).
    """

    kind: str
    path: str
    origin: str | None = None
    notes: tuple[str, ...] = field(default=())


def _prepared_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / "nltk_data"


def _find_in(paths: Sequence[str]) -> str | None:
    """nltk corpus root of WordNet under one of ``paths`` (folder first, then zip), or None."""
    import nltk

    for resource in ("corpora/wordnet", "corpora/wordnet.zip/wordnet/"):
        try:
            return str(nltk.data.find(resource, paths=list(paths)))
        except LookupError:
            continue
    return None


def _missing_files(folder: Path) -> list[str]:
    return [f for f in _REQUIRED if not (folder / f).is_file()]


def _system_candidates(system_dirs: Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    if system_dirs is not None:
        return [Path(d) for d in system_dirs]
    env = [os.environ.get("WNSEARCHDIR")]
    if os.environ.get("WNHOME"):
        env.append(str(Path(os.environ["WNHOME"]) / "dict"))
    return [Path(d) for d in [*env, *SYSTEM_WORDNET_DIRS] if d]


def _marker_doc(origin: Path) -> dict[str, Any]:
    data = origin / "data.noun"
    return {"origin": str(origin.resolve()), "data.noun_size": data.stat().st_size, "method": "copy"}


def _prepare_system(origin: Path, root: Path) -> Path:
    """Copy ``origin``'s files into ``root/corpora/wordnet`` (about 36 MB) and write ``lexnames``.

    nltk 3.10 refuses symlinks leaving its data path and multiply-linked files (hard links), so a copy it is.
    The copy is made in ``corpora/.wordnet-<pid>.tmp`` and renamed into place under a file lock (two runs
    preparing at once do it once); the temporary folders of killed runs are removed first.
    """
    from filelock import FileLock

    from .._atomic import clean_stale_temps

    target = root / "corpora" / "wordnet"

    def prepared() -> bool:
        marker = target / _MARKER
        if marker.is_file() and not _missing_files(target) and (target / "lexnames").is_file():
            try:
                return json.loads(marker.read_text()) == _marker_doc(origin)
            except (OSError, ValueError):
                return False
        return False

    clean_stale_temps(target.parent)  # .wordnet-<pid>.tmp/ of killed runs (up to 36 MB each)
    if prepared():
        return target
    root.mkdir(parents=True, exist_ok=True, mode=0o700)  # nltk refuses group/world-writable data folders
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / ".wordnet.lock"):
        if prepared():  # another run prepared it while this one waited
            return target
        tmp = target.with_name(f".wordnet-{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            for src in sorted(origin.iterdir()):
                if not src.is_file():
                    continue
                shutil.copyfile(src, tmp / src.name)
            (tmp / "lexnames").write_text("".join(f"{i:02d}\t{n}\t{p}\n" for i, (n, p) in enumerate(LEXNAMES)))
            (tmp / _MARKER).write_text(json.dumps(_marker_doc(origin)))
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _add_to_nltk_path(root: Path) -> None:
    import nltk

    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))


def find_wordnet(*, cache_dir: str | os.PathLike[str] | None = None,
                 nltk_paths: Sequence[str] | None = None,
                 system_dirs: Sequence[str | os.PathLike[str]] | None = None,
                 download: bool = True) -> WordNetSource:
    """Locate WordNet for nltk (preparing the system copy when needed); see the module docstring.

    Parameters
    ----------
    cache_dir : path, optional
        clipaudit cache folder (default: :func:`~analysis.resources.default_cache_dir`); the prepared
        nltk data folder is ``<cache_dir>/nltk_data``.
    nltk_paths : list of str, optional
        nltk data folders to search first (default: ``nltk.data.path`` without the prepared folder).
    system_dirs : list of path, optional
        System WordNet folders to try (default: ``$WNSEARCHDIR``, ``$WNHOME/dict``,
        :data:`SYSTEM_WORDNET_DIRS`).
    download : bool, default=True
        Try ``nltk.download('wordnet')`` (into the prepared folder) when nothing else is found.

    Raises
    ------
    ClipauditError
        When no source works; the message lists what was tried and how to install WordNet.
    """
    import nltk

    prepared = _prepared_root(cache_dir)
    notes: list[str] = []
    paths = list(nltk.data.path if nltk_paths is None else nltk_paths)
    own = [p for p in paths if Path(p).expanduser() != prepared]
    found = _find_in(own)
    if found is not None:
        return WordNetSource("nltk_data", found)
    notes.append(f"nltk data path {own}: no corpora/wordnet")

    for origin in _system_candidates(system_dirs):
        if not origin.is_dir():
            continue
        missing = _missing_files(origin)
        if missing:
            notes.append(f"{origin}: missing {', '.join(missing)}")
            continue
        target = _prepare_system(origin, prepared)
        _add_to_nltk_path(prepared)
        return WordNetSource("system", str(target), origin=str(origin), notes=tuple(notes))
    tried = [str(d) for d in _system_candidates(system_dirs)]
    notes.append(f"system folders {tried}: none usable")

    found = _find_in([str(prepared)])  # an earlier download
    if found is None and download:
        prepared.mkdir(parents=True, exist_ok=True, mode=0o700)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok = nltk.download("wordnet", download_dir=str(prepared), quiet=True, raise_on_error=False)
        found = _find_in([str(prepared)]) if ok else None
        if found is None:
            notes.append("nltk.download('wordnet') failed (no network?)")
    if found is not None:
        _add_to_nltk_path(prepared)
        return WordNetSource("download", found, notes=tuple(notes))
    raise ClipauditError("WordNet was not found. Tried: " + "; ".join(notes) + ". " + INSTALL_HINT)


def load_wordnet(source: WordNetSource | None = None, **find_kwargs: Any) -> Any:
    """nltk ``WordNetCorpusReader`` for ``source`` (default: :func:`find_wordnet`); one reader per process."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    source = source or find_wordnet(**find_kwargs)
    key = (source.kind, source.path)
    if key not in _READERS:
        import nltk

        try:
            with warnings.catch_warnings():  # "multilingual functions are not available": English only
                warnings.simplefilter("ignore")
                _READERS[key] = WordNetCorpusReader(nltk.data.find(_resource_of(source.path)), None)
        except (OSError, LookupError, ValueError) as exc:
            raise ClipauditError(
                f"WordNet at {source.path} ({source.kind}) could not be read: {exc}. {INSTALL_HINT}"
            ) from None
    return _READERS[key]


def _resource_of(path: str) -> str:
    """nltk resource name for a corpus root returned by ``nltk.data.find``."""
    return "corpora/wordnet.zip/wordnet/" if ".zip" in path else "corpora/wordnet"


def wordnet_status(**find_kwargs: Any) -> dict[str, Any]:
    """Which WordNet is in use: ``{"source", "path", "origin", "version", "nltk", "notes"}``."""
    import nltk

    source = find_wordnet(**find_kwargs)
    wn = load_wordnet(source)
    return {"source": source.kind, "path": source.path, "origin": source.origin, "version": wn.get_version(),
            "nltk": nltk.__version__, "notes": list(source.notes)}


# --------------------------------------------------------------------------------------------- synsets
def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (timm's ``_info/imagenet_synsets.txt``)."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def _wordnet_error() -> type[Exception]:
    from nltk.corpus.reader.wordnet import WordNetError

    return WordNetError


def synset_from_wnid(wn: Any, wnid: str, *, classname: str | None = None) -> Any:
    """Synset of a WordNet id such as ``'n02012849'`` (pos letter + 8-digit WordNet 3.0 offset)."""
    where = f" for class {classname!r}" if classname is not None else ""
    wnid = str(wnid).strip()
    if len(wnid) != 9 or wnid[0] not in "nvars" or not wnid[1:].isdigit():
        raise ClipauditError(f"WordNet id {wnid!r}{where} is not valid: expected a letter and 8 digits, "
                             f"e.g. 'n02012849'.")
    WordNetError = _wordnet_error()  # noqa: N806
    try:
        with warnings.catch_warnings():  # nltk warns and returns None for an unknown offset
            warnings.simplefilter("ignore")
            synset = wn.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))
    except (WordNetError, ValueError, KeyError):
        synset = None
    if synset is None:
        raise ClipauditError(f"WordNet id {wnid!r}{where} is not a synset of WordNet {wn.get_version()}.")
    return synset


def wnid_of(synset: Any) -> str:
    """WordNet id (``'n02012849'``) of a synset."""
    return f"{synset.pos()}{synset.offset():08d}"


def resolve_synset(wn: Any, spec: str, *, classname: str, source: str = "") -> Any:
    """A synset from a name (``'gym_shoe.n.01'``) or a WordNet id (``'n03472535'``); errors name the class."""
    where = f" ({source})" if source else ""
    spec = str(spec).strip()
    if len(spec) == 9 and spec[1:].isdigit():
        return synset_from_wnid(wn, spec, classname=classname)
    WordNetError = _wordnet_error()  # noqa: N806
    try:
        return wn.synset(spec)
    except (WordNetError, ValueError, KeyError):
        lemma = spec.split(".")[0]
        near = [s.name() for s in wn.synsets(lemma)][:5]
        hint = f" Synsets of {lemma!r}: {near}." if near else ""
        raise ClipauditError(f"Class {classname!r}{where}: {spec!r} is not a WordNet synset name "
                             f"(expected e.g. 'dog.n.01' or 'n02084071').{hint}") from None


def lookup_noun(wn: Any, word: str) -> list[Any]:
    """Noun synsets of ``word`` (WordNet's morphology applies: 'trousers' -> trouser), most frequent first.

    Spaces and hyphens are tried as WordNet writes multi-word lemmas ('ankle boot' -> 'ankle_boot').
    """
    word = str(word).strip()
    seen: dict[str, Any] = {}
    for form in dict.fromkeys([word, word.replace(" ", "_"), word.replace("-", "_"), word.lower()]):
        if form:
            for s in wn.synsets(form, pos="n"):
                seen.setdefault(s.name(), s)
        if seen:
            break
    return list(seen.values())


# --------------------------------------------------------------------------------------------- overrides
def find_override_file(dataset: str) -> Path | None:
    """``prompts/wordnet_overrides/<dataset>.json``, or the file listing ``dataset`` in its ``aliases``."""
    folder = data_dir("prompts") / "wordnet_overrides"
    direct = folder / f"{dataset}.json"
    if direct.is_file():
        return direct
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            if dataset in json.loads(path.read_text()).get("aliases", []):
                return path
        except (OSError, ValueError, AttributeError):
            continue
    return None


@dataclass(frozen=True)
class Override:
    """One override entry: ``synset`` (name or WordNet id; None = unmapped on purpose), optional ``wnid``."""

    synset: str | None
    wnid: str | None = None
    names: tuple[str, ...] = ()


def load_overrides(path: str | os.PathLike[str]) -> dict[str, Override]:
    """Read a class -> synset override file.

    Schema (plain JSON)::

        {"dataset": "fashion-mnist", "aliases": ["bundled"], "wordnet": "3.0",
         "classes": [{"names": ["Sneaker", "sneaker"], "synset": "gym_shoe.n.01", "wnid": "n03472535",
                      "note": "..."}, ...]}

    Each entry gives every spelling of the class (matched case-insensitively) and ``synset`` (a synset
    name or WordNet id, or null for "deliberately unmapped"); ``wnid``, when also given, must name the same
    synset (checked in :func:`map_classes`). Returns ``{lowercased spelling: Override}``.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ClipauditError(f"WordNet override file {str(path)!r} is not readable JSON: {exc}.") from None
    entries = doc.get("classes") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        got = type(entries if isinstance(doc, dict) else doc).__name__
        raise ClipauditError(f"WordNet override file {str(path)!r}: expected an object with a 'classes' "
                             f"list, got {got}.")
    out: dict[str, Override] = {}
    for i, e in enumerate(entries):
        names = e.get("names") if isinstance(e, dict) else None
        if not names or not isinstance(names, list) or "synset" not in e:
            raise ClipauditError(f"WordNet override file {str(path)!r}: classes[{i}] needs 'names' (a list "
                                 f"of spellings) and 'synset' (name, WordNet id or null); got {e!r}.")
        for n in names:
            out[str(n).lower()] = Override(e["synset"], e.get("wnid"), tuple(str(x) for x in names))
    return out


# --------------------------------------------------------------------------------------------- mapping
@dataclass
class ClassMapping:
    """Result of :func:`map_classes`: one synset (or None) per class, and how it was found."""

    classnames: list[str]
    synsets: list[Any]
    how: list[str]  # "wnid", "override", "lemma", "ambiguous" (first sense taken), "unmapped"
    candidates: list[list[str]]

    @property
    def unmapped(self) -> list[str]:
        return [c for c, h in zip(self.classnames, self.how) if h == "unmapped"]

    @property
    def ambiguous(self) -> dict[str, list[str]]:
        return {c: cand for c, h, cand in zip(self.classnames, self.how, self.candidates) if h == "ambiguous"}

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "class": self.classnames,
            "synset": [s.name() if s is not None else None for s in self.synsets],
            "wnid": [wnid_of(s) if s is not None else None for s in self.synsets],
            "how": self.how,
            "definition": [s.definition() if s is not None else None for s in self.synsets],
            "candidates": [", ".join(c) for c in self.candidates],
        })


def map_classes(wn: Any, classnames: Sequence[str], *, wnids: Sequence[str | None] | None = None,
                overrides: Mapping[str, Override] | None = None, override_source: str = "overrides",
                ambiguous: str = "first", strict: bool = False) -> ClassMapping:
    """Map class names to noun synsets.

    Order per class: ``wnids[i]`` when given; else the override entry; else noun lemma lookup.
    A name with several noun synsets is ``"ambiguous"``: with ``ambiguous="first"`` (default) WordNet's
    most frequent sense is used, with ``"skip"`` the class is left unmapped. Override names that match
    no class raise (typos would otherwise silently do nothing).

    Parameters
    ----------
    wn : nltk WordNetCorpusReader
    classnames : list of str
    wnids : list of str or None, optional
        WordNet ids per class (ImageNet: :func:`imagenet_wnids`).
    overrides : dict, optional
        From :func:`load_overrides`.
    ambiguous : {"first", "skip"}, default="first"
    strict : bool, default=False
        Raise when a class maps to nothing (the error names the classes).
    """
    check_choice("ambiguous", ambiguous, ["first", "skip"])
    if wnids is not None and len(wnids) != len(classnames):
        raise ClipauditError(f"wnids has {len(wnids)} entries; there are {len(classnames)} classes.")
    overrides = dict(overrides or {})
    lowered = [str(c).lower() for c in classnames]
    # an entry is unused when none of its spellings is a class name (a typo would silently do nothing)
    unknown = list(dict.fromkeys(o.names[0] if o.names else k for k, o in overrides.items()
                                 if not any(n.lower() in lowered for n in (o.names or (k,)))))
    if unknown:
        near = close_matches(unknown[0], classnames)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ClipauditError(f"{override_source}: class name(s) {unknown[:5]} match no class of the dataset "
                             f"(classes: {list(classnames)[:10]}).{hint}")
    synsets: list[Any] = []
    how: list[str] = []
    cands: list[list[str]] = []
    for i, (name, low) in enumerate(zip(classnames, lowered)):
        if wnids is not None and wnids[i]:
            synsets.append(synset_from_wnid(wn, wnids[i], classname=name))
            how.append("wnid")
            cands.append([])
        elif low in overrides:
            spec, check = overrides[low].synset, overrides[low].wnid
            s = resolve_synset(wn, spec, classname=name, source=override_source) if spec else None
            if s is not None and check and wnid_of(s) != check:
                raise ClipauditError(f"{override_source}: class {name!r} gives synset {spec!r} "
                                     f"({wnid_of(s)}) but wnid {check!r}; make them agree.")
            synsets.append(s)
            how.append("override" if s is not None else "unmapped")
            cands.append([])
        else:
            found = lookup_noun(wn, name)
            cands.append([s.name() for s in found])
            if len(found) == 1:
                synsets.append(found[0])
                how.append("lemma")
            elif found and ambiguous == "first":
                synsets.append(found[0])
                how.append("ambiguous")
            else:
                synsets.append(None)
                how.append("ambiguous" if found else "unmapped")
    mapping = ClassMapping(list(classnames), synsets, how, cands)
    if strict and (mapping.unmapped or any(s is None for s in synsets)):
        bad = [c for c, s in zip(classnames, synsets) if s is None]
        raise ClipauditError(f"Class(es) {bad} map to no WordNet noun synset; add them to an override file "
                             f"(prompts/wordnet_overrides/<dataset>.json).")
    return mapping


# --------------------------------------------------------------------------------------------- hierarchy
@dataclass(frozen=True)
class WordNode:
    """One WordNet synset as the hierarchy method uses it.

    ``name`` is the first lemma with spaces ('wading bird'); ``lemmas`` all of them; ``abstract`` marks
    a WordNet unique beginner (lexicographer file ``noun.Tops``) at most ``abstract_depth`` hypernym steps
    below ``entity`` (physical entity, object, whole, artifact, matter, living thing, ...).
    """

    wnid: str
    name: str
    lemmas: tuple[str, ...]
    abstract: bool


@dataclass(frozen=True)
class ClassNode:
    """A class with its WordNet neighbourhood (plain data; the hierarchy core needs no nltk).

    ``parent_chains[j]`` starts at the j-th direct parent (hypernyms, then instance hypernyms, each by
    increasing WordNet offset) and follows each ancestor's first parent (same order) upward; ``entity``
    is left out. ``children`` are the direct hyponyms, then instance hyponyms, by increasing offset.
    (nltk returns related synsets in set order, which changes between processes; offset order makes
    "first parent" and "first N children" reproducible.) Unmapped classes have ``wnid=None`` and no
    parents or children.
    """

    classname: str
    wnid: str | None
    parent_chains: tuple[tuple[WordNode, ...], ...]
    children: tuple[WordNode, ...]


def word_node(synset: Any, *, abstract_depth: int = 4) -> WordNode:
    """:class:`WordNode` of a synset."""
    lemmas = tuple(lemma.replace("_", " ") for lemma in synset.lemma_names())
    abstract = synset.lexname() == "noun.Tops" and synset.min_depth() <= abstract_depth
    return WordNode(wnid_of(synset), lemmas[0], lemmas, abstract)


def _by_offset(synsets: Sequence[Any]) -> list[Any]:
    # nltk keeps a synset's pointers in a set, so hypernyms()/hyponyms() come in hash order, which varies
    # between processes; WordNet's own pointer order is not exposed. Sort by offset: deterministic.
    return sorted(synsets, key=lambda s: s.offset())


def _parents(synset: Any) -> list[Any]:
    return _by_offset(synset.hypernyms()) + _by_offset(synset.instance_hypernyms())


def class_nodes(classnames: Sequence[str], synsets: Sequence[Any], *,
                abstract_depth: int = 4) -> list[ClassNode]:
    """:class:`ClassNode` per class from mapped synsets (None -> an unmapped class)."""
    if len(classnames) != len(synsets):
        raise ClipauditError(f"{len(classnames)} class names but {len(synsets)} synsets.")
    memo: dict[str, WordNode] = {}

    def node(s: Any) -> WordNode:
        if s.name() not in memo:
            memo[s.name()] = word_node(s, abstract_depth=abstract_depth)
        return memo[s.name()]

    out = []
    for name, syn in zip(classnames, synsets):
        if syn is None:
            out.append(ClassNode(str(name), None, (), ()))
            continue
        chains = []
        for parent in _parents(syn):
            chain, cur, seen = [], parent, set()
            while cur is not None and cur.name() != "entity.n.01" and cur.name() not in seen:
                seen.add(cur.name())
                chain.append(node(cur))
                ups = _parents(cur)
                cur = ups[0] if ups else None
            chains.append(tuple(chain))
        children = tuple(node(c) for c in _by_offset(syn.hyponyms()) + _by_offset(syn.instance_hyponyms()))
        out.append(ClassNode(str(name), wnid_of(syn), tuple(chains), children))
    return out
