"""matplotlib figures drawn for both the HTML report and MLflow (Agg backend, no display).

A module of its own, beside ``logs``: the report (reporting/) and the tracker (integrations/)
both draw the gold confusion matrix, and neither folder may import the other's.
"""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    """matplotlib without a display (Agg), imported only when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(matrix: list[list[int]], title: str, size: tuple[float, float]) -> Any:
    """A 2×2 gold confusion matrix with its counts: the report embeds it, MLflow stores it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=size)
    ax.imshow(matrix, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center")
    ax.set_xticks([0, 1], ["pred 0", "pred 1"])
    ax.set_yticks([0, 1], ["true 0", "true 1"])
    ax.set_title(title, fontsize=8)
    return fig
