"""The grammar's text, and one digest of everything a parse's result depends on (for cache keys)."""

from __future__ import annotations

import hashlib
import sys
from functools import cache
from importlib import resources
from pathlib import Path

from mailrules import __version__

__all__ = ["code_digest", "grammar_text"]

_DSL = Path(__file__).resolve().parent


def grammar_text() -> str:
    """The grammar: shipped inside the wheel as mailrules/grammar/, else the repository's grammar/."""
    shipped = resources.files("mailrules").joinpath("grammar", "mailrules.lark")
    if shipped.is_file():
        return shipped.read_text(encoding="utf-8")
    repo = _DSL.parents[1] / "grammar" / "mailrules.lark"
    return repo.read_text(encoding="utf-8")


@cache
def code_digest() -> str | None:
    """SHA-256 (hex) of mailrules' and Python's versions, the grammar and the source of every module
    of mailrules/dsl/ and mailrules/source.py: a parse cached under another digest may not be what
    this code would build. None when a source file cannot be read (then nothing is cached)."""
    h = hashlib.sha256(f"{__version__}\0{sys.version}\0".encode())
    try:
        h.update(grammar_text().encode("utf-8"))
        for path in (*sorted(_DSL.glob("*.py")), _DSL.parent / "source.py"):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    except OSError:
        return None
    return h.hexdigest()
