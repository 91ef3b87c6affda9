"""Subsets and splits: balanced, stratified, seeded, grouped, disjoint, recorded."""

import numpy as np
import pytest

from sast.config import RunConfig
from sast.data.dvsgesture import dvsgesture_subjects, load_dvsgesture, subject_of
from sast.data.subsets import (
    balanced_subset,
    class_counts,
    indices_digest,
    stratified_split,
)
from sast.runs.splits import plan_splits, prepare_data

from ..data.test_dvsgesture import SPLITS, TRIALS, write_release


def class_sorted(counts):
    """A label index sorted by class, as the N-MNIST release lists it."""
    return np.repeat(np.arange(len(counts)), counts)


NMNIST_COUNTS = [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]


@pytest.mark.parametrize("size", [1, 9, 10, 37, 200, 500])
def test_balanced_subset_of_a_class_sorted_index_is_balanced(size):
    labels = class_sorted(NMNIST_COUNTS)
    idx = balanced_subset(labels, size, seed=0)
    counts = np.bincount(labels[idx], minlength=10)
    assert len(idx) == len(set(idx.tolist())) == size
    assert counts.max() - counts.min() <= 1
    assert np.all(np.diff(idx) > 0)


def test_balanced_subset_fills_up_from_classes_that_have_more():
    labels = class_sorted([3, 50, 50])
    counts = np.bincount(labels[balanced_subset(labels, 30, seed=1)])
    assert counts.tolist() == [3, 13, 14] or counts.tolist() == [3, 14, 13]
    assert len(balanced_subset(labels, 500, seed=1)) == len(labels)


def test_subsets_are_seeded():
    labels = class_sorted(NMNIST_COUNTS)
    a, b = balanced_subset(labels, 100, seed=3), balanced_subset(labels, 100, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, balanced_subset(labels, 100, seed=4))
    kept, held = stratified_split(labels, 0.2, seed=[0, 2])
    assert np.array_equal(held, stratified_split(labels, 0.2, seed=[0, 2])[1])
    assert not np.array_equal(held, stratified_split(labels, 0.2, seed=[1, 2])[1])


def test_stratified_split_keeps_class_proportions():
    labels = class_sorted(NMNIST_COUNTS)
    kept, held = stratified_split(labels, 0.2, seed=0)
    assert len(held) == 200 and len(kept) == 800
    assert not set(kept.tolist()) & set(held.tolist())
    # 0.2 · n_c = 19.4 23.2 19.8 18.6 21 18.4 18.8 23.4 17.4 20: floors, then one more for the
    # four largest remainders (.8, .8, .6 and the first .4)
    assert class_counts(labels[held], 10) == [20, 23, 20, 19, 21, 18, 19, 23, 17, 20]
    assert stratified_split(labels, 0.0, seed=0)[1].size == 0
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(labels, 1.0, seed=0)


def test_grouped_split_never_splits_a_group():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(23), rng.integers(30, 60, size=23))
    labels = rng.integers(0, 11, size=len(groups))
    kept, held = stratified_split(labels, 0.1, seed=5, groups=groups)
    assert not set(groups[kept].tolist()) & set(groups[held].tolist())
    assert len(kept) + len(held) == len(labels) and len(held) > 0
    # the held-out groups' size is the prefix sum nearest the target
    assert abs(len(held) - 0.1 * len(labels)) <= groups.size / 23 * 2
    with pytest.raises(ValueError, match="one id per sample"):
        stratified_split(labels, 0.1, seed=5, groups=groups[:-1])


def test_indices_digest():
    assert indices_digest([1, 2, 3]) == indices_digest(np.array([1, 2, 3], dtype=np.int32))
    assert indices_digest([1, 2, 3]) != indices_digest([1, 2, 4])
    assert len(indices_digest([])) == 16


def parts(plan):
    return {name: set(p.rows.tolist()) for name, p in plan.parts().items()
            if p.rows is not None}


def test_plan_carves_a_disjoint_test_split_and_trims_to_a_balanced_subset():
    labels = class_sorted(NMNIST_COUNTS)
    cfg = RunConfig(max_train_samples=200)
    plan = plan_splits(labels, cfg, test_on_disk=False)
    p = parts(plan)
    assert plan.test_carved and len(p["test"]) == 200 and len(p["val"]) == 80
    assert not (p["train"] & p["val"] or p["train"] & p["test"] or p["val"] & p["test"])
    assert class_counts(labels[plan.train.rows], 10) == [20] * 10
    # every run seed of a study reads the same samples; another split_seed other ones
    same = plan_splits(labels, cfg.replace(seed=7), test_on_disk=False)
    assert parts(same) == p
    other = plan_splits(labels, cfg.replace(split_seed=1), test_on_disk=False)
    assert parts(other)["test"] != p["test"]


def test_plan_uses_the_test_split_on_disk():
    labels = class_sorted(NMNIST_COUNTS)
    plan = plan_splits(labels, RunConfig(), test_on_disk=True)
    assert not plan.test_carved and plan.test.source == "test" and plan.test.rows is None
    assert len(plan.val.rows) == 100 and len(plan.train.rows) == 900


def test_dvsgesture_subjects_follow_the_sample_order(tmp_path):
    write_release(tmp_path / "DvsGesture")
    events = load_dvsgesture(tmp_path, "train", progress=False)
    subjects = dvsgesture_subjects(tmp_path, "train")
    assert len(subjects) == len(events)
    assert subjects.tolist() == [subject_of(t) for t in SPLITS["train"] for _ in TRIALS[t]]
    assert subject_of("user07_led.aedat") == 7
    with pytest.raises(ValueError, match="userNN"):
        subject_of("someone_led.aedat")


def test_dvsgesture_validation_holds_out_whole_subjects(tmp_path):
    write_release(tmp_path / "DvsGesture")
    cfg = RunConfig(dataset="dvsgesture", data_root=str(tmp_path), val_fraction=0.4,
                    time_bins=4, window_ms=12.0, cache_dir=str(tmp_path / "cache"))
    splits = prepare_data(cfg)
    subjects = dvsgesture_subjects(tmp_path, "train")
    train, val = splits.plan.train.rows, splits.plan.val.rows
    assert len(val) > 0 and len(train) > 0
    assert not set(subjects[train].tolist()) & set(subjects[val].tolist())
    assert splits.manifest()["test"]["source"] == "the dataset's test split"
