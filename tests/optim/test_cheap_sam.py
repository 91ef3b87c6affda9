"""Cheaper SAM: exact steps every k-th step, LookSAM reuse between them, SAM from a later epoch."""

import pytest
import torch

from sast.config import RunConfig
from sast.optim import SAM, LookSAM
from sast.runs.folder import RunFolder
from sast.runs.load import load_run
from sast.training.loop import fit
from sast.training.steps import step_kind

SMALL = dict(max_train_samples=96, hidden=(16,), time_bins=6, batch_size=32, epochs=2,
             eval_batch_size=512, method="sast", rho=0.05)


def quiet(*_):
    pass


def grad_evals(run) -> list[int]:
    return [row["grad_evals"] for row in RunFolder(run).read_metrics()]


def test_looksam_reuse_step_follows_g_plus_scaled_sharpness_direction():
    # exact step: g = (6, 8) at w = (3, 4); g_s = (7.6, 8.8) at w + ε = (3.3, 4.4)
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    sam = LookSAM(torch.optim.SGD([w], lr=0.1), rho=0.5, alpha=0.5)
    (w ** 2).sum().backward()
    sam.first_step(zero_grad=True)
    ((w ** 2).sum() + w[0]).backward()
    sam.second_step(zero_grad=True)
    after_exact = torch.tensor([3.0, 4.0]) - 0.1 * torch.tensor([7.6, 8.8])
    torch.testing.assert_close(w.detach(), after_exact)
    # g_v = g_s − (⟨g, g_s⟩/‖g‖²)·g = (7.6, 8.8) − 1.16·(6, 8) = (0.64, −0.48), ‖g_v‖ = 0.8
    w.grad = torch.tensor([1.0, 0.0])  # a reuse step's g, ‖g‖ = 1
    sam.reuse_step()
    direction = torch.tensor([1.0, 0.0]) + 0.5 * (1.0 / 0.8) * torch.tensor([0.64, -0.48])
    torch.testing.assert_close(w.detach(), after_exact - 0.1 * direction)


def test_looksam_without_a_stored_direction_is_a_plain_step():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    sam = LookSAM(torch.optim.SGD([w], lr=0.5), rho=0.1)
    w.grad = torch.tensor([2.0, 2.0])
    sam.reuse_step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.0, -3.0]))


def test_looksam_exact_steps_are_sam_steps():
    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randn(16, 1)
    weights = []
    for cls in (SAM, LookSAM):
        torch.manual_seed(1)
        net = torch.nn.Linear(5, 1)
        opt = cls(torch.optim.Adam(net.parameters(), lr=0.01), rho=0.1)
        for _ in range(3):
            opt.step(lambda net=net, opt=opt: _mse_closure(net, opt, x, y))
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    torch.testing.assert_close(weights[0], weights[1])


def _mse_closure(net, opt, x, y):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(net(x), y)
    loss.backward()
    return loss


def test_step_kinds_follow_interval_reuse_and_start_epoch():
    cfg = RunConfig(method="sast", epochs=3, sam_interval=2, sam_reuse="looksam",
                    sam_start_epoch=1)
    assert [step_kind(cfg, 0, i) for i in range(3)] == ["plain"] * 3
    assert [step_kind(cfg, 2, i) for i in range(5)] == ["exact", "reuse"] * 2 + ["exact"]
    assert step_kind(RunConfig(method="surrogate", sam_interval=2), 0, 0) == "plain"


@pytest.mark.parametrize("changes, expected", [
    (dict(), [6, 6]),                                            # 3 steps × 2 passes
    (dict(sam_interval=2), [5, 5]),                              # exact, plain, exact
    (dict(sam_interval=3, sam_reuse="looksam"), [4, 4]),         # exact, reuse, reuse
    (dict(sam_start_epoch=1), [3, 6]),                           # plain epoch, then SAM
])
def test_forward_backward_passes_per_epoch(tmp_path, changes, expected):
    fit(RunConfig(**{**SMALL, **changes}), tmp_path / "run", progress=False, log=quiet)
    assert grad_evals(tmp_path / "run") == expected


def test_looksam_run_resumes_to_the_same_weights(tmp_path):
    cfg = RunConfig(**{**SMALL, "sam_interval": 2, "sam_reuse": "looksam", "epochs": 2})
    fit(cfg, tmp_path / "straight", progress=False, log=quiet)
    fit(cfg.replace(epochs=1), tmp_path / "resumed", progress=False, log=quiet)
    fit(cfg, tmp_path / "resumed", resume=True, progress=False, log=quiet)
    a = load_run(tmp_path / "straight")[1].state_dict()
    b = load_run(tmp_path / "resumed")[1].state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name])


@pytest.mark.parametrize("field, value", [("sam_interval", 0), ("looksam_alpha", -1.0),
                                          ("sam_start_epoch", 5), ("sam_reuse", "sometimes")])
def test_bad_cheap_sam_settings_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        RunConfig(**{**SMALL, field: value}).validate()
