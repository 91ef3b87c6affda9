"""Seeded, class-aware subsets of a labelled split: what every trimmed or held-out set is made of.

Dataset indexes are often sorted by class (the N-MNIST release lists ``Train/0`` first), so
"the first k samples" can be one class only. Every subset ``sast`` takes goes through here:

- :func:`balanced_subset` — ``size`` samples with equal counts per class (as far as each class
  has samples), drawn with a seeded generator: ``max_train_samples``, the diagnostics sample;
- :func:`stratified_split` — a held-out part whose class proportions follow the whole
  (per-class quotas ``round``-ed by largest remainder), or, given ``groups`` (the subject or
  recording of each sample), whole groups held out, never split across the two parts:
  validation and a carved-out test split;
- :func:`class_counts` and :func:`indices_digest` — what a run folder records of each subset.

Every function is a pure function of its arguments (labels, sizes, seed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

Seed = int | Sequence[int]
"""What ``numpy.random.default_rng`` takes: an integer, or integers mixed into one seed."""


def _labels(labels: ArrayLike) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} and "
                         f"dtype {labels.dtype}")
    return labels.astype(np.int64)


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer quotas summing to ``total``, proportional to ``weights``: floors first, then one
    more for the largest remainders (ties: the lower index)."""
    exact = weights / weights.sum() * total
    quotas = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: total - int(quotas.sum())]] += 1
    return quotas


def balanced_subset(labels: ArrayLike, size: int, seed: Seed) -> np.ndarray:
    """Sorted indices of ``size`` samples with as equal a count per class as the classes allow.

    Water-filling: every class gets ``⌊size / C⌋`` samples, or all it has if fewer; what is
    left over goes one sample at a time to the classes that still have samples, in a seeded
    order. Within each class the samples are a seeded random choice. ``size >= len(labels)``
    returns every index.
    """
    labels = _labels(labels)
    if size < 0:
        raise ValueError(f"subset size must be >= 0, got {size}")
    if size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, available = np.unique(labels, return_counts=True)
    quotas = np.zeros(len(classes), dtype=np.int64)
    left = size
    while left:
        open_ = np.flatnonzero(quotas < available)
        share = left // len(open_)
        if share == 0:
            quotas[rng.choice(open_, size=left, replace=False)] += 1
            break
        add = np.minimum(share, available[open_] - quotas[open_])
        quotas[open_] += add
        left -= int(add.sum())
    chosen = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False)
              for c, q in zip(classes, quotas, strict=True)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def stratified_split(
    labels: ArrayLike, fraction: float, seed: Seed, groups: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` sorted indices, about ``fraction`` of the samples held out.

    Without ``groups``: class c holds out ``q_c`` of its ``n_c`` samples, the quotas
    proportional to ``n_c`` and summing to ``round(fraction · n)`` (largest remainder), each a
    seeded random choice within the class.

    With ``groups`` (one id per sample, e.g. the subject): whole groups are held out, never
    split. The groups are shuffled with the seed and the shortest prefix whose sample count is
    nearest ``round(fraction · n)`` is held out (at least one group, and at least one kept, when
    0 < fraction and there are two groups or more).
    """
    labels = _labels(labels)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must lie in [0, 1), got {fraction}")
    n = len(labels)
    target = int(round(fraction * n))
    rng = np.random.default_rng(seed)
    if groups is None:
        if target == 0:
            return np.arange(n), np.zeros(0, dtype=np.int64)
        classes, counts = np.unique(labels, return_counts=True)
        quotas = _largest_remainder(counts.astype(float), target)
        held = np.concatenate([
            rng.choice(np.flatnonzero(labels == c), size=q, replace=False)
            for c, q in zip(classes, quotas, strict=True)])
    else:
        groups = np.asarray(groups)
        if groups.shape != labels.shape:
            raise ValueError(f"groups must give one id per sample: {groups.shape} for "
                             f"{labels.shape} labels")
        ids, sizes = np.unique(groups, return_counts=True)
        if target == 0 or len(ids) < 2:
            return np.arange(n), np.zeros(0, dtype=np.int64)
        order = rng.permutation(len(ids))
        cumulative = np.cumsum(sizes[order])[:-1]
        k = int(np.argmin(np.abs(cumulative - target))) + 1
        held = np.flatnonzero(np.isin(groups, ids[order[:k]]))
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def class_counts(labels: ArrayLike, n_classes: int) -> list[int]:
    """Samples per class, classes ``0 … n_classes − 1``."""
    return np.bincount(_labels(labels), minlength=n_classes).tolist()


def indices_digest(indices: ArrayLike) -> str:
    """sha256 of the indices as little-endian int64, 16 hex digits: two runs used the same
    subset exactly when their digests agree."""
    data = np.ascontiguousarray(np.asarray(indices, dtype="<i8")).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]
