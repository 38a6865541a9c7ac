"""Metrics of the T5 tasks on generated text, in % (rank classification is plain accuracy).

* exact match (FusionBench's GLUE classification tasks): the generation equals the
  reference, both decoded without special tokens;
* Spearman's rho (STS-B): between the numbers the generations and references parse to (0
  where a generation is not a number, as FusionBench); 0 when either side is constant (rho
  is undefined there);
* SQuAD (ROPES in TIES-Merging, which reports the mean of EM and F1): answers normalised
  (lower case, punctuation and the articles a/an/the removed, whitespace collapsed); EM and
  token F1 take the best gold answer per example (Rajpurkar et al., EMNLP 2016).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """% of predictions equal to their (first) reference."""
    hits = [p == refs[0] for p, refs in zip(predictions, references, strict=True)]
    return 100.0 * sum(hits) / max(len(hits), 1)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def spearman(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """100 x Spearman's rho between parsed predictions and references (module docstring)."""
    x = np.array([_number(p) for p in predictions])
    y = np.array([_number(refs[0]) for refs in references])
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    from scipy.stats import spearmanr  # imported here: scipy.stats takes a second to import

    return 100.0 * float(spearmanr(x, y)[0])


def normalise_answer(text: str) -> str:
    """SQuAD's answer normalisation (module docstring)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalise_answer(prediction).split(), normalise_answer(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """(EM + F1) / 2 in %, each the mean over examples of the best gold answer's score."""
    em = f1 = 0.0
    for p, golds in zip(predictions, references, strict=True):
        em += max(float(normalise_answer(p) == normalise_answer(g)) for g in golds)
        f1 += max(_f1(p, g) for g in golds)
    n = max(len(predictions), 1)
    return 100.0 * (em + f1) / (2 * n)


GENERATION_METRICS = {"exact_match": exact_match, "spearman": spearman, "squad": squad}
