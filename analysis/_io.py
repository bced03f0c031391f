"""Reading user files with errors that name the file and say what it was meant to be."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._checks import ClipauditError

__all__ = ["read_user_text", "read_user_json"]


def read_user_text(path: str | os.PathLike[str], what: str) -> str:
    """Text of ``path`` (UTF-8); a missing or unreadable file raises ``ClipauditError`` naming ``what`` it is."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ClipauditError(f"{what} {str(path)!r} cannot be read: {err}.") from None


def read_user_json(path: str | os.PathLike[str], what: str, text: str | None = None) -> Any:
    """Parsed JSON of ``path`` (or of ``text`` already read from it), with the file named in errors."""
    text = read_user_text(path, what) if text is None else text
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ClipauditError(f"{what} {str(path)!r} is not valid JSON: {err}.") from None
