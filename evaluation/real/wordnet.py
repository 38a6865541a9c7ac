"""WordNet 3.0 database files (``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``; Debian
package ``wordnet-base``) read into synsets: part of speech, lexicographer file (the
supersense, e.g. ``noun.animal``), words, gloss, verb frames and topic domains.

Format (wndb(5WN)): one synset per line, ``offset lex_filenum ss_type w_cnt word lex_id ...
p_cnt ptr ... [f_cnt frame ...] | gloss``; ``w_cnt`` is hexadecimal, ``p_cnt`` and
``f_cnt`` decimal; each pointer is ``symbol offset pos source/target`` (``;c``: the synset's
topic domain); each verb frame ``+ f_num w_num``. Lines starting with two spaces are the
licence header. Lexicographer file numbers are named as in lexnames(5WN)
(``data/lexnames.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).with_name("data")
POS_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
TOPIC_DOMAIN = ";c"


@dataclass(frozen=True)
class Synset:
    """One synset: ``pos`` is ``n``, ``v``, ``a``, ``s`` (adjective satellite) or ``r``;
    ``definition`` the gloss without its quoted examples; ``frames`` the generic verb frame
    numbers of any of its words; ``topics`` the first words of its topic-domain synsets."""

    offset: int
    pos: str
    lexname: str
    words: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]
    frames: tuple[int, ...]
    topics: tuple[str, ...]


def lexnames() -> list[str]:
    """The 45 lexicographer file names, indexed by file number (lexnames(5WN))."""
    return json.loads((DATA / "lexnames.json").read_text())


def split_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """(definition, examples) of a gloss: the examples are its double-quoted parts."""
    parts = [p.strip() for p in gloss.split(";")]
    examples = tuple(p.strip('"') for p in parts if p.startswith('"'))
    definition = "; ".join(p for p in parts if p and not p.startswith('"'))
    return definition, examples


def _parse(line: str, names: list[str], where: str) -> tuple[Synset, list[int]]:
    """A data line as a synset (topics still empty) and the offsets of its topic domains."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    try:
        offset, lexnum, pos = int(fields[0]), int(fields[1]), fields[2]
        w_cnt = int(fields[3], 16)
        words = tuple(fields[4 + 2 * i].replace("_", " ") for i in range(w_cnt))
        at = 4 + 2 * w_cnt
        p_cnt = int(fields[at])
        pointers = [fields[at + 1 + 4 * i : at + 5 + 4 * i] for i in range(p_cnt)]
        at += 1 + 4 * p_cnt
        frames: tuple[int, ...] = ()
        if pos == "v" and at < len(fields):
            f_cnt = int(fields[at])
            frames = tuple(sorted({int(fields[at + 2 + 3 * i]) for i in range(f_cnt)}))
        domains = [int(p[1]) for p in pointers if p[0] == TOPIC_DOMAIN]
        lexname = names[lexnum]
    except (IndexError, ValueError) as err:
        raise ValueError(f"{where}: not a WordNet synset line ({err})") from None
    definition, examples = split_gloss(gloss.strip())
    return Synset(offset, pos, lexname, words, definition, examples, frames, ()), domains


def read_synsets(root: str | os.PathLike) -> Iterator[Synset]:
    """Every synset of the four data files under ``root``, in file order (noun, verb,
    adjective, adverb), topic domains resolved to their synsets' first words."""
    names = lexnames()
    parsed: list[tuple[Synset, list[int]]] = []
    nouns: dict[int, str] = {}
    for pos, name in POS_FILES.items():
        path = Path(root) / name
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.startswith("  ") or not line.strip():
                    continue
                synset, domains = _parse(line, names, f"{path}:{number}")
                parsed.append((synset, domains))
                if pos == "n":
                    nouns[synset.offset] = synset.words[0]
    for synset, domains in parsed:
        if domains:
            topics = tuple(dict.fromkeys(nouns[d] for d in domains if d in nouns))
            synset = Synset(**{**synset.__dict__, "topics": topics})
        yield synset
