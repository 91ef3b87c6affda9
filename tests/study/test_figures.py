"""The figure check the report tests use rejects what it should."""

import pytest

from sast.study.report.render import pyplot, save_figure

from ..conftest import assert_figure


def _figure(path, size_in, draw):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(size_in, size_in))
    if draw:
        ax.plot([0, 1, 2], [0, 2, 1])
    else:
        ax.axis("off")
    save_figure(fig, path)
    return path


def test_a_drawn_figure_passes_and_blank_or_tiny_ones_fail(tmp_path):
    assert_figure(_figure(tmp_path / "drawn.png", 4, True))
    with pytest.raises(AssertionError, match="blank"):
        assert_figure(_figure(tmp_path / "blank.png", 4, False))
    with pytest.raises(AssertionError, match="px"):
        assert_figure(_figure(tmp_path / "tiny.png", 1, True))
