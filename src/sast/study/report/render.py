"""How the report writes: 'mean ± std' cells, Markdown tables, matplotlib without a display,
and figures saved atomically as PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sast.runs.folder import atomic_write_bytes


def pm(values: np.ndarray, scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± std' (std over seeds, ddof = 0), or 'mean' for one value, or '–'."""
    if len(values) == 0:
        return "–"
    mean = float(np.mean(values)) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {float(np.std(values)) * scale:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:  # noqa: ANN001
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    pyplot().close(fig)


def seed_spread(values: np.ndarray) -> float:
    return float(np.std(values)) if len(values) > 1 else 0.0
