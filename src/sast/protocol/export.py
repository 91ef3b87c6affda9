"""``sast export``: a run folder's trained network written as a NIR graph
(:func:`sast.interop.nir.export_nir`); reset by subtraction is refused, since NIR's LIF
resets to v_reset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sast.interop.nir import DEFAULT_DT, FORMATS, SubtractiveResetError, export_nir, require_nir


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "nir",
               dt: float = DEFAULT_DT) -> dict[str, Any]:
    """Export a run folder's trained network (its last checkpoint, batch norm folded) to
    ``out`` in format ``fmt``; returns a summary: the file, its nodes and edges, dt, the number
    of time steps and the readout."""
    from sast.runs.folder import RunFolder
    from sast.runs.load import load_run

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    if not RunFolder(run_dir).config.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    require_nir()

    cfg, model = load_run(run_dir, device="cpu")
    if cfg.reset != "zero":
        raise SubtractiveResetError(
            f"{run_dir} was trained with reset: {cfg.reset}: after a spike its membrane keeps "
            "u − ϑ, while NIR's LIF sets it to v_reset, so no NIR graph computes what it "
            "computes. Train it with --reset zero to export it exactly.")
    graph = export_nir(model, out, dt, cfg.time_bins)
    return {"path": str(out), "format": fmt, "dt": dt, "time_steps": cfg.time_bins,
            "readout": graph.metadata["readout"],
            "nodes": {name: type(node).__name__ for name, node in graph.nodes.items()},
            "edges": [list(e) for e in graph.edges]}
