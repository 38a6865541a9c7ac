"""The validation split of the TALL masks protocol (Wang et al., ICML 2024).

Validation = a random 10% of the training set, at most 5000 samples, seed 0; the experts
were fine-tuned on the rest of train and are scored on the official test split. The
draw is the authors' ``torch.utils.data.random_split(train, [n - n_val, n_val],
generator=torch.Generator().manual_seed(0))``: one ``torch.randperm(n)``, whose first
``n - n_val`` entries are train and last ``n_val`` are val (their code checks that the
first MNIST train index is 36044), so the released experts never saw our val split.

Experts fine-tuned on a dataset's whole train split (the hf_transformers CLIP experts) did
see it; for them the same draw holds val out of the test split instead (the CLIP
benchmark's ``val_from=test``: val = 10% of test, test accuracy on the other 90%).

:func:`open_split` reads one split of a ``datasets`` dataset, from the hub or a local copy
(the CLIP and T5 benchmarks' data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

VAL_FRACTION, VAL_MAX, VAL_SEED = 0.1, 5000, 0


def train_val_indices(
    n_train: int, fraction: float = VAL_FRACTION, max_size: int = VAL_MAX, seed: int = VAL_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out) into a split of ``n_train`` samples, both sorted: held_out =
    ``min(int(n_train * fraction), max_size)`` of them drawn by one seeded permutation."""
    n_val = min(int(n_train * fraction), max_size)
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(perm[: n_train - n_val]), np.sort(perm[n_train - n_val :])


def open_split(
    source: str, subset: str | None, split: str, revision: str | None, local_subset: bool
) -> Any:
    """Split ``split`` of dataset ``source``: a hub id (read with ``subset`` and
    ``revision``) or a local path, a directory written by ``save_to_disk`` (a DatasetDict,
    or one Dataset per split in ``<path>/<split>``) or any directory ``load_dataset`` reads,
    given ``subset`` as well if ``local_subset`` (the CLIP benchmark's choice; the T5
    benchmark reads such a directory without it). Raises ``ValueError`` for a split that a
    saved DatasetDict lacks or a single saved Dataset; ``datasets``' errors otherwise."""
    import datasets

    path = Path(source).expanduser()
    if not path.exists():
        return datasets.load_dataset(source, subset, split=split, revision=revision)
    if (path / "dataset_dict.json").exists():
        saved = datasets.load_from_disk(str(path))
        if split not in saved:
            raise ValueError(f"no split {split!r}; the saved dataset has {list(saved)}")
        return saved[split]
    if (path / split / "state.json").exists():
        return datasets.load_from_disk(str(path / split))
    if (path / "state.json").exists():
        raise ValueError(
            "it is a single saved Dataset: save a DatasetDict with its splits, or one "
            "Dataset per split in <path>/<split>"
        )
    return datasets.load_dataset(str(path), subset if local_subset else None, split=split)
