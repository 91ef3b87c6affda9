"""frames_from_batches: a user's batches as one FrameSet."""

import pytest
import torch

from sast.data import FrameSet
from sast.data.batches import frames_from_batches


def _batches(n=10, t=5, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 4, (n, t, 2, 3, 3), generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y, [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def test_batch_first_and_time_first_batches_give_the_same_samples():
    x, y, batches = _batches()
    a = frames_from_batches(batches, batch_first=True)
    b = frames_from_batches([(f.transpose(0, 1), labels) for f, labels in batches])
    for s in (a, b):
        frames, labels = s.batch(slice(None))
        assert torch.equal(frames, x.to(torch.uint8)) and torch.equal(labels, y)
        assert frames.dtype == torch.uint8 and s.n_classes == int(y.max()) + 1
        assert s.input_shape == (2, 3, 3) and s.time_bins == 5


def test_one_pair_a_dataloader_and_a_frameset():
    x, y, _ = _batches()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=3)
    assert torch.equal(frames_from_batches(loader, batch_first=True).batch(slice(None))[0],
                       frames_from_batches((x, y), batch_first=True).batch(slice(None))[0])
    s = FrameSet(x, y, 3)
    assert frames_from_batches(s) is s


def test_float_frames_stay_float_and_steps_are_padded_at_the_end():
    x = torch.rand(2, 3, 4)
    y = torch.tensor([0, 1])
    short = torch.ones(2, 1, 4)
    s = frames_from_batches([(x, y), (short, y)], batch_first=True, n_classes=5)
    frames, _ = s.batch(slice(None))
    assert frames.dtype == torch.float32 and s.n_classes == 5
    assert torch.equal(frames[:2], x)
    assert torch.equal(frames[2:, :1], short) and not frames[2:, 1:].any()


@pytest.mark.parametrize(("data", "kwargs", "match"), [
    ([(torch.zeros(4, 6, 8), torch.zeros(6, dtype=torch.long))], {"batch_first": True},
     r"train, batch 0: .*hold 4 samples, labels 6 — the batch is on the other axis: pass "
     r"batch_first=False"),
    ([(torch.zeros(6, 4, 8), torch.zeros(6, dtype=torch.long))], {},
     r"pass batch_first=True \(tonic's PadTensors is batch-first\)"),
    ([(torch.zeros(4, 6), torch.zeros(6, dtype=torch.long))], {}, "at least 3 dimensions"),
    ([(torch.zeros(3, 2, 8), torch.zeros(2))], {}, "labels must be integer class indices"),
    ([(torch.zeros(3, 2, 8), torch.tensor([0, 3]))], {"n_classes": 3}, "label 3 is not below"),
    ([(torch.zeros(3, 2, 8), torch.tensor([0, 1])), (torch.zeros(3, 2, 9), torch.tensor([0, 1]))],
     {}, r"batch 1: frames of per-step shape \(9,\), the first batch's are \(8,\)"),
    ([], {}, "holds no batch"),
    ([torch.zeros(3)], {}, "expected a \\(frames, labels\\) pair"),
])
def test_bad_batches_are_refused_naming_the_batch(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        frames_from_batches(data, what="train", **kwargs)


def test_something_not_iterable_is_refused():
    with pytest.raises(TypeError, match="expected a FrameSet, a \\(frames, labels\\) pair"):
        frames_from_batches(3)
