"""Sharpness-aware minimisation (SAM) as a wrapper around any base optimiser.

For a loss L(w), radius ρ and gradient g = ∇L(w) on a minibatch ξ, one SAM step is

    ε = ρ · g / ‖g‖                       (ascent to the approximate worst point of the ρ-ball)
    w ← BaseStep(w, ∇L(w + ε; ξ'))        (descend with the gradient taken there)

where ξ' = ξ for standard SAM (Foret et al., 2021) and ξ' is an independent second minibatch for
the variant covered by SAST's convergence theory. The adaptive variant (ASAM, Kwon et al., 2021)
scales the ball by T_w = diag(|w| + η):

    ε = ρ · T_w² g / ‖T_w g‖.

:class:`SAM` shares ``param_groups`` with its base optimiser, so learning-rate schedulers and
``state_dict`` round trips act on both (attach a scheduler to ``sam.base_optimizer``: its
``step`` is the one that runs). Each group carries ``rho``, ``adaptive`` and ``eta``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

SAM_POLICIES = ("same", "independent")
SAM_REUSES = ("none", "looksam")


class SAM(Optimizer):
    """SAM / ASAM around ``base_optimizer`` (an instance, e.g. ``torch.optim.Adam(params)``).

    Use :meth:`first_step` after the first backward pass and :meth:`second_step` after the
    second, or :meth:`step` with a closure that recomputes the loss and calls ``backward``.

    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    >>> sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.5)
    >>> (w ** 2).sum().backward()          # g = 2w = (6, 8), ‖g‖ = 10
    >>> sam.first_step(zero_grad=True)     # w + ε = (3.3, 4.4)
    >>> [round(v, 5) for v in w.detach().tolist()]
    [3.3, 4.4]
    >>> (w ** 2).sum().backward()          # g' = (6.6, 8.8)
    >>> sam.second_step()                  # w = (3, 4) − 0.1·g'
    >>> [round(v, 5) for v in w.detach().tolist()]
    [2.34, 3.12]
    """

    def __init__(
        self, base_optimizer: Optimizer, rho: float = 0.05, adaptive: bool = False,
        eta: float = 0.01,
    ) -> None:
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(
                "SAM wraps an optimiser instance, e.g. SAM(torch.optim.Adam(model.parameters()))"
                f", got {type(base_optimizer).__name__}"
            )
        if not rho >= 0.0:
            raise ValueError(f"SAM radius rho must be >= 0, got {rho}")
        if not eta >= 0.0:
            raise ValueError(f"ASAM eta must be >= 0, got {eta}")
        self.base_optimizer = base_optimizer
        super().__init__(base_optimizer.param_groups, dict(rho=rho, adaptive=adaptive, eta=eta))
        self.param_groups = base_optimizer.param_groups
        self.defaults.update(base_optimizer.defaults)

    def _scale(self, p: torch.Tensor, group: dict) -> torch.Tensor | float:
        return p.abs() + group["eta"] if group["adaptive"] else 1.0

    def _grad_norm(self) -> torch.Tensor:
        """‖T_w g‖ over every parameter with a gradient (T_w = 1 for plain SAM)."""
        norms = [
            (self._scale(p, group) * p.grad).norm(p=2)
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        if not norms:
            raise RuntimeError("SAM.first_step found no gradients; call backward() first")
        return torch.stack([n.to(norms[0].device) for n in norms]).norm(p=2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """w ← w + ε with ε = ρ·T_w²g/‖T_w g‖; remembers w for :meth:`second_step`."""
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                t_w = self._scale(p, group)
                e_w = p.grad * (t_w * t_w) * scale.to(p.device)
                self.state[p]["old_p"] = p.detach().clone()
                p.add_(e_w)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w and take the base optimiser's step with the gradient found at w + ε."""
        for group in self.param_groups:
            for p in group["params"]:
                old = self.state[p].pop("old_p", None)
                if old is not None:
                    p.copy_(old)
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """One SAM step with a ``torch.optim``-style closure, which zeroes the gradients,
        computes the loss (on the same minibatch each time), calls ``backward`` and returns the
        loss. ``step`` calls it twice — at w, then at w + ε — and returns the loss at w::

            def closure():
                sam.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                return loss

            loss = sam.step(closure)
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that zeroes the gradients, recomputes the "
                             "loss, calls backward() and returns the loss")
        with torch.enable_grad():
            loss = closure()
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """The base optimiser's state (its param groups carry ``rho``, ``adaptive``, ``eta``)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


class LookSAM(SAM):
    """SAM that reuses its ascent's effect between exact steps (LookSAM, Liu et al., 2022).

    On an exact SAM step, with g = ∇L(w) and g_s = ∇L(w + ε), it keeps the part of g_s
    orthogonal to g,

        g_v = g_s − (⟨g, g_s⟩ / ‖g‖²)·g,

    and on the steps in between (:meth:`reuse_step`, one gradient evaluation) it descends along

        g + α·(‖g‖ / ‖g_v‖)·g_v,

    the current gradient plus the stored sharpness direction rescaled to its norm. Which steps
    are exact is the caller's choice (every k-th, in :func:`sast.training.epoch.train_epoch`).
    Before the
    first exact step there is no g_v, and :meth:`reuse_step` is a plain base step.

    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    >>> sam = LookSAM(torch.optim.SGD([w], lr=0.1), rho=0.5, alpha=1.0)
    >>> (w ** 2).sum().backward(); sam.first_step(zero_grad=True)
    >>> ((w ** 2).sum() + w[0]).backward()   # g_s = (7.6, 8.8); g_v ⟂ g = (6, 8)
    >>> sam.second_step(zero_grad=True)
    >>> [round(v, 4) for v in sam.sharpness_direction()[0].tolist()]
    [0.64, -0.48]
    """

    def __init__(
        self, base_optimizer: Optimizer, rho: float = 0.05, adaptive: bool = False,
        eta: float = 0.01, alpha: float = 0.7,
    ) -> None:
        if not alpha >= 0.0:
            raise ValueError(f"LookSAM alpha must be >= 0, got {alpha}")
        super().__init__(base_optimizer, rho=rho, adaptive=adaptive, eta=eta)
        self.alpha = float(alpha)

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """As :meth:`SAM.first_step`, keeping g for :meth:`second_step`."""
        for p in self._params():
            self.state[p]["looksam_g"] = p.grad.detach().clone()
        super().first_step(zero_grad=zero_grad)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """As :meth:`SAM.second_step`, storing g_v, the part of g_s orthogonal to g."""
        params = [p for p in self._params() if "looksam_g" in self.state[p]]
        dot = sum((self.state[p]["looksam_g"] * p.grad).sum() for p in params)
        g_sq = sum(self.state[p]["looksam_g"].square().sum() for p in params)
        coef = dot / (g_sq + 1e-12)
        for p in params:
            self.state[p]["looksam_gv"] = p.grad - coef * self.state[p].pop("looksam_g")
        super().second_step(zero_grad=zero_grad)

    def sharpness_direction(self) -> list[torch.Tensor]:
        """The stored g_v, one tensor per parameter that has one."""
        return [st["looksam_gv"] for st in self.state.values() if "looksam_gv" in st]

    @torch.no_grad()
    def reuse_step(self) -> None:
        """Descend along g + α·(‖g‖/‖g_v‖)·g_v, with g the gradient now in ``.grad``."""
        params = [p for p in self._params() if "looksam_gv" in self.state[p]]
        if params:
            g_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
            gv_norm = torch.linalg.vector_norm(
                torch.stack([self.state[p]["looksam_gv"].norm() for p in params]))
            scale = self.alpha * g_norm / (gv_norm + 1e-12)
            for p in params:
                p.grad.add_(self.state[p]["looksam_gv"] * scale)
        self.base_optimizer.step()

    def forget(self) -> None:
        """Drop the stored g_v (the next exact step stores a new one)."""
        for st in self.state.values():
            st.pop("looksam_gv", None)


def build_base_optimizer(
    name: str, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0  # noqa: ANN001
) -> Optimizer:
    """``"adam"``, ``"adamw"`` or ``"sgd"`` (with momentum) over ``params``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of ('adam', 'adamw', 'sgd')")
