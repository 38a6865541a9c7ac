"""fortune(6) data files: entries separated by lines holding only ``%`` (the strfile format
without its index). Entries are cleaned for use as text: overstrike sequences (``_\\bx``,
bold or underline on terminals) reduced to the character they print, lines joined with
single spaces.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

OVERSTRIKE = re.compile(".\x08")


def clean(entry: str) -> str:
    """An entry as one line of text: overstrikes removed, whitespace collapsed."""
    return " ".join(OVERSTRIKE.sub("", entry).split())


def parse_fortunes(text: str) -> list[str]:
    """The non-empty cleaned entries of a fortune file's text."""
    entries, current = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            entries.append(clean("\n".join(current)))
            current = []
        else:
            current.append(line)
    entries.append(clean("\n".join(current)))
    return [e for e in entries if e]


def read_fortunes(path: str | os.PathLike) -> list[str]:
    """The entries of the fortune file ``path`` (UTF-8; undecodable bytes replaced)."""
    return parse_fortunes(Path(path).read_bytes().decode("utf-8", errors="replace"))
