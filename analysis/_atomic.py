"""Atomic file writes (write a temporary file in the same folder, then rename) and stale-temp cleanup.

A temporary file is named ``.<name>.<pid>-<random>[suffix].tmp``: it carries the writer's process id, so
a later run can tell the leftovers of a killed writer (its process is gone) from a write in progress, and
:func:`clean_stale_temps` removes only the former. Temporary folders named ``.<name>-<pid>.tmp`` (e.g.
``.wordnet-1234.tmp``) follow the same rule.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "clean_stale_temps",
           "stale_temps", "remove_path", "temp_owner", "is_temp_name", "pid_alive", "STALE_AGE"]

#: Age (seconds) after which a temporary file is stale even when its process id is in use (a reused id).
STALE_AGE = 24 * 3600.0

# .<name>.<pid>-<random>[suffix].tmp (files of atomic_path) and .<name>-<pid>.tmp (temporary folders)
_WITH_PID = (re.compile(r"^\..+\.(?P<pid>\d+)-[a-z0-9_]+(?:\.[^/]*)?\.tmp$"), re.compile(r"^\..+-(?P<pid>\d+)\.tmp$"))


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file is ``.<name>.<pid>-<random><suffix>.tmp`` in the same folder; it is removed if the
    block raises, and left for :func:`clean_stale_temps` if the process is killed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; final files get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _write(path: str | os.PathLike[str], mode: str, writer: Callable[[IO[Any]], None]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return _write(path, "wb", lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return _write(path, "w", lambda fh: fh.write(text))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write strict JSON (NaN/inf become null) atomically."""
    return atomic_write_text(path, json.dumps(_strict(obj), indent=2, sort_keys=False) + "\n")


def _strict(obj: Any) -> Any:
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _strict(obj.item())
    return obj


# ---------------------------------------------------------------------------------------------- stale temps
def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file or folder name of this package (``.<...>.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp") and len(name) > 5


def temp_owner(name: str) -> int | None:
    """Process id of the writer of temporary file/folder ``name``, or None (no id in the name)."""
    for pattern in _WITH_PID:
        m = pattern.match(name)
        if m:
            return int(m.group("pid"))
    return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as gone; unknown counts as alive)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill would terminate the process there; rely on the age rule instead
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: its writes are over
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:][:1] != "Z"
    except (OSError, ValueError):
        return True


def _size(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
        return path.lstat().st_size
    except OSError:
        return 0


def stale_temps(folder: str | os.PathLike[str], *, recursive: bool = False, max_age: float = STALE_AGE,
                now: float | None = None) -> list[tuple[Path, int]]:
    """Temporary files and folders in ``folder`` left by writers that are gone.

    A temporary (``.<...>.tmp``) is stale when the process id in its name no longer runs, or, when its
    name has no process id or the id is in use (possibly by another program), when it was last modified
    more than ``max_age`` seconds ago. ``recursive``: in every subfolder too (not inside temporary
    folders). Returns ``(path, size in bytes)`` pairs.
    """
    now = time.time() if now is None else now
    if recursive:
        out = []
        for dirpath, dirnames, _ in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not is_temp_name(d)]
            out += stale_temps(dirpath, max_age=max_age, now=now)
        return out
    folder = Path(folder)
    out = []
    try:
        children = list(os.scandir(folder))
    except OSError:  # missing, not a folder, unreadable
        return []
    for child in children:
        if not is_temp_name(child.name):
            continue
        pid = temp_owner(child.name)
        path = Path(child.path)
        if pid is not None and not pid_alive(pid):
            out.append((path, _size(path)))
            continue
        try:
            old = now - child.stat(follow_symlinks=False).st_mtime > max_age
        except OSError:
            continue
        if old:
            out.append((path, _size(path)))
    return out


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree; a path already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale_temps(folder: str | os.PathLike[str], *, recursive: bool = False,
                      max_age: float = STALE_AGE) -> list[tuple[Path, int]]:
    """Remove the stale temporary files and folders of ``folder`` (see :func:`stale_temps`).

    Parameters
    ----------
    folder : path
        A missing folder is fine (nothing is removed).
    recursive : bool, default=False
        Also look in every subfolder (not inside the temporary folders themselves).
    max_age : float, default=STALE_AGE
        Seconds after which a temporary whose process id is in use counts as stale anyway.

    Returns
    -------
    list of (Path, int)
        What was removed and its size in bytes.
    """
    removed = stale_temps(folder, recursive=recursive, max_age=max_age)
    for path, _ in removed:
        remove_path(path)
    return removed
