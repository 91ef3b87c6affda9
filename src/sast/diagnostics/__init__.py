"""Theory-alignment diagnostics of a trained network: sharpness, Hessian spectrum, loss slices,
contraction, state bounds, Lipschitz bounds and per-sample gradient norms.

- :mod:`~sast.diagnostics.sharpness`: worst-case sharpness in the ρ-ball, Hessian-vector
  products, top Hessian eigenvalues (Lanczos), filter-normalised directions and loss slices.
- :mod:`~sast.diagnostics.bounds`: global and local contraction factors, state bounds, operator
  norms, the input-Lipschitz bound and :func:`contraction_diagnostics`.
- :mod:`~sast.diagnostics.gradients`: per-sample input- and parameter-gradient norms, the
  first-layer mechanism check, Spearman's rank correlation and :func:`gradient_mechanism`.
- ``_common``: shared plumbing (parameters, batches, restoring the model) and :func:`loss_on`.
- This module: :func:`run_diagnostics`, everything at once (the dict of ``diagnostics.json``).

Every function takes a model (a :class:`sast.models.SpikingNet`) and data as a list of batches
``[(x, y)]`` with ``x`` time-first ``[T, B, ...]`` and ``y`` class indices ``[B]``. The loss is the
mean cross-entropy over all samples of all batches, in surrogate mode unless a ``spike_mode``
argument says otherwise. Inputs are moved to the device and dtype of the model's parameters.

Each function leaves the model as it found it: parameters (bit for bit), spike modes, scan
implementations, ``record`` flags and train/eval mode. Second-order work runs through the
plain-autograd reference scan, since the fused scan is first-order only.

The formulas (contraction factor, state bound, input-Lipschitz bound) are derived in
``docs/theory.md``.

Floor 6: may import layers, neuron, surrogate and the rooms below; never training,
run folders or above (``sast evaluate --diagnostics`` is :mod:`sast.protocol.evaluate`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from torch import nn

from sast.diagnostics._common import Batches, _n_samples, _take, loss_on
from sast.diagnostics.bounds import (
    contraction_diagnostics,
    global_contraction_factor,
    lipschitz_bound,
    local_contraction_factors,
    state_bounds,
)
from sast.diagnostics.gradients import (
    gradient_mechanism,
    input_gradient_norms,
    parameter_gradient_norms,
    spearman,
)
from sast.diagnostics.sharpness import (
    _lanczos_ritz_values,
    filter_normalised_direction,
    hessian_vector_product,
    loss_slice,
    top_hessian_eigenvalues,
    worst_case_sharpness,
)

__all__ = [
    "Batches",
    "contraction_diagnostics",
    "filter_normalised_direction",
    "global_contraction_factor",
    "gradient_mechanism",
    "hessian_vector_product",
    "input_gradient_norms",
    "lipschitz_bound",
    "local_contraction_factors",
    "loss_on",
    "loss_slice",
    "parameter_gradient_norms",
    "run_diagnostics",
    "spearman",
    "state_bounds",
    "top_hessian_eigenvalues",
    "worst_case_sharpness",
]


def run_diagnostics(
    model: nn.Module, batches: Batches, rho: float, seed: int = 0, *,
    sharpness_steps: int = 5, adaptive: bool = False, hessian_k: int = 3,
    hessian_iters: int = 20, hessian_tol: float = 1e-3, hessian_max_samples: int | None = None,
    alphas: Sequence[float] | np.ndarray | None = None, max_samples: int = 256,
) -> dict[str, object]:
    """All diagnostics with small defaults, as one JSON-serialisable dict with the keys
    ``sharpness``, ``hessian``, ``loss_slice``, ``contraction``, ``gradients`` and ``seconds``
    (the time each part took).

    The Hessian is the costliest part (``hessian_iters`` double-backward passes over its
    samples): ``hessian_max_samples`` restricts it to the first samples of ``batches``."""
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds[name] = time.perf_counter() - start
        return result

    sharp = timed("sharpness", worst_case_sharpness, model, batches, rho, sharpness_steps,
                  adaptive)
    hessian_batches = _take(batches, hessian_max_samples)
    ritz, n_iter = timed("hessian", _lanczos_ritz_values, model, hessian_batches, hessian_k,
                         hessian_iters, seed, hessian_tol)
    return {
        "n_samples": _n_samples(batches),
        "sharpness": sharp,
        "hessian": {
            "top_eigenvalues": [float(v) for v in ritz[:hessian_k]],
            "min_ritz_value": float(ritz[-1]), "lanczos_steps": n_iter, "seed": seed,
            "n_samples": _n_samples(hessian_batches),
        },
        "loss_slice": timed("loss_slice", loss_slice, model, batches, alphas, seed),
        "contraction": timed("contraction", contraction_diagnostics, model, batches),
        "gradients": timed("gradients", gradient_mechanism, model, batches, max_samples),
        "seconds": seconds,
    }
