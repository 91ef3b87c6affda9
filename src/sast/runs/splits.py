"""The train / validation / test splits of one run: class-aware, seeded, disjoint, recorded.

From the dataset's training split, in this order (each a pure function of the labels, the
subjects where the dataset has them, and ``split_seed``):

1. **test**: the dataset's test split when it is on disk; otherwise ``test_fraction`` of the
   training split is carved out (stratified by class, or by whole subject where samples share
   one) and the run says so (``final.json`` ``splits.test.source``);
2. **validation**: ``val_fraction`` of what is left, stratified the same way;
3. **training part**: the rest, trimmed to a class-balanced ``max_train_samples`` when given.

Model selection (ρ, temperature, threshold scales) reads the validation part only; the test
part is read once, to report, and never overlaps it. Every run of a study shares
``split_seed`` (default 0), so its runs differ in their own ``seed`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sast.config import RunConfig
from sast.data import FrameSet, load_frames, split_available
from sast.data.registry import sample_groups
from sast.data.subsets import balanced_subset, class_counts, indices_digest, stratified_split

TEST_STREAM, VALIDATION_STREAM, TRAIN_SUBSET_STREAM, DIAGNOSTIC_STREAM = 1, 2, 3, 4
"""Each subset draws from its own generator, seeded by ``(split_seed, stream)``."""


@dataclass(frozen=True)
class SplitPart:
    """Which samples of which dataset split one part of a run reads."""

    source: str
    """The dataset split read: ``"train"`` or ``"test"``."""
    rows: np.ndarray | None
    """Indices into ``source``, sorted; None: all of it."""


@dataclass(frozen=True)
class SplitPlan:
    """Where each part of a run comes from (indices only: no frames are read to make it)."""

    train: SplitPart
    val: SplitPart
    test: SplitPart

    @property
    def test_carved(self) -> bool:
        """Whether the test part was carved out of the training split."""
        return self.test.source == "train"

    def parts(self) -> dict[str, SplitPart]:
        return {"train": self.train, "val": self.val, "test": self.test}


def plan_splits(
    train_labels: np.ndarray, cfg: RunConfig, test_on_disk: bool,
    train_groups: np.ndarray | None = None,
) -> SplitPlan:
    """The split plan of ``cfg`` for a training split with ``train_labels`` (see the module
    docstring)."""
    rows = np.arange(len(train_labels))

    def held_out(rows: np.ndarray, fraction: float, stream: int) -> tuple[np.ndarray, np.ndarray]:
        groups = None if train_groups is None else train_groups[rows]
        kept, held = stratified_split(train_labels[rows], fraction, [cfg.split_seed, stream],
                                      groups)
        return rows[kept], rows[held]

    if test_on_disk:
        test = SplitPart("test", None)
    else:
        rows, test_rows = held_out(rows, cfg.test_fraction, TEST_STREAM)
        if len(test_rows) == 0:
            raise ValueError(f"{cfg.dataset}: the test split is not on disk and test_fraction "
                             f"{cfg.test_fraction} of the training split holds no sample")
        test = SplitPart("train", test_rows)
    rows, val_rows = held_out(rows, cfg.val_fraction, VALIDATION_STREAM)
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(rows):
        keep = balanced_subset(train_labels[rows], cfg.max_train_samples,
                               [cfg.split_seed, TRAIN_SUBSET_STREAM])
        rows = rows[keep]
    return SplitPlan(SplitPart("train", rows), SplitPart("train", val_rows), test)


@dataclass
class Splits:
    """The frames of each part of a run, and the plan they were taken by."""

    train: FrameSet
    val: FrameSet
    """Possibly empty (``val_fraction = 0``)."""
    test: FrameSet
    plan: SplitPlan
    split_seed: int = 0
    sources: dict[str, str] | None = None
    """What each part is, where it is not a split of a named dataset (data given to
    :func:`sast.train_model`): ``{"train": …, "val": …, "test": …}``."""

    def manifest(self) -> dict[str, Any]:
        """What ``splits.json`` and ``final.json`` record: per part its source, size, class
        counts and a digest of its indices."""
        out: dict[str, Any] = {"split_seed": self.split_seed}
        for name, part in self.plan.parts().items():
            data: FrameSet = getattr(self, name)
            source = ("the dataset's test split" if part.source == "test"
                      else "carved out of the training split" if name == "test"
                      else "the training split") if self.sources is None else self.sources[name]
            out[name] = {
                "source": source, "n": len(data),
                "class_counts": class_counts(data.labels.numpy(), data.n_classes),
                "indices_sha256": None if part.rows is None else indices_digest(part.rows),
            }
        return out


def describe(manifest: dict[str, Any]) -> str:
    """One line on the parts of a run, e.g. ``train 200 (20 per class) · val 80 · test 200
    (carved out of the training split)``."""
    parts = []
    for name in ("train", "val", "test"):
        info = manifest[name]
        counts = info["class_counts"]
        spread = (f"{counts[0]} per class" if len(set(counts)) == 1
                  else f"{min(counts)}–{max(counts)} per class")
        where = " (carved out of the training split)" if info["source"].startswith("carved") \
            else ""
        parts.append(f"{name} {info['n']} ({spread}){where}")
    return " · ".join(parts)


def prepare_data(cfg: RunConfig, progress: bool = False) -> Splits:
    """The frames of the training part, validation part and test part of ``cfg``'s run."""
    def frames(split: str) -> FrameSet:
        return load_frames(cfg.dataset, split, cfg.time_bins, cfg.binning, cfg.data_root,
                           cfg.cache_dir, progress, **cfg.dataset_options())

    full = frames("train")
    test_on_disk = split_available(cfg.dataset, "test", cfg.data_root)
    groups = sample_groups(cfg.dataset, "train", cfg.data_root)
    plan = plan_splits(full.labels.numpy(), cfg, test_on_disk, groups)

    def part(p: SplitPart, source: FrameSet) -> FrameSet:
        return source if p.rows is None else source.subset(p.rows)

    test = part(plan.test, frames("test") if test_on_disk else full)
    return Splits(part(plan.train, full), part(plan.val, full), test, plan, cfg.split_seed)


def diagnostic_sample(train: FrameSet, size: int, split_seed: int) -> FrameSet:
    """A class-balanced, seeded sample of ``size`` training samples (the diagnostics read it)."""
    rows = balanced_subset(train.labels.numpy(), size, [split_seed, DIAGNOSTIC_STREAM])
    return train.subset(rows)
