"""Plots are written whole: ``save_figure`` renders in memory and writes atomically, and no module of
mcutrain calls ``savefig`` on a path itself."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from mcutrain.io.figure import save_figure  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[2] / "mcutrain"


def _figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    return fig


def test_a_plot_is_written_whole(tmp_path):
    fig = _figure()
    path = save_figure(fig, tmp_path / "sub" / "plot.png", dpi=50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["plot.png"]  # no temporary file left
    svg = save_figure(fig, tmp_path / "plot.svg", dpi=50)
    assert b"<svg" in svg.read_bytes()[:400]
    plt.close(fig)


def test_a_render_that_fails_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old plot")
    fig = _figure()

    def half_then_fail(target, **kw):
        target.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(fig, "savefig", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, path, dpi=50)
    assert path.read_bytes() == b"old plot" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    plt.close(fig)


def test_no_module_saves_a_figure_straight_to_a_path():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if ".savefig(" in p.read_text() and p.name != "figure.py"]
    assert offenders == []
