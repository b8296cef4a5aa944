"""The loss plot of a training run."""

from __future__ import annotations

from pathlib import Path

from mygpt.io.files import write_atomically


def plot_losses(
    epochs: float,
    tokens_seen: list[int],
    train_losses: list[float],
    val_losses: list[float],
    path: str | Path,
    task: tuple[list[float], list[float], str] | None = None,
) -> Path:
    """Save train/val loss against epochs, with tokens seen as a second x axis, as a PNG;
    `task`: (epochs, scores, name) of a benchmark, on a second y axis."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # Evaluations are evenly spaced in steps, so they are evenly spaced in epochs too.
    n = len(train_losses)
    epochs_seen = [epochs * i / max(n - 1, 1) for i in range(n)]
    fig, ax1 = plt.subplots(figsize=(6, 4))
    ax1.plot(epochs_seen, train_losses, label="Training loss")
    ax1.plot(epochs_seen, val_losses, linestyle="-.", label="Validation loss")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2 = ax1.twiny()  # the same curve against tokens seen, drawn invisibly to set the axis
    ax2.plot(tokens_seen, train_losses, alpha=0)
    ax2.set_xlabel("Tokens seen")
    if task:
        x, scores, name = task
        ax3 = ax1.twinx()
        ax3.plot(x, scores, color="tab:green", marker="o", label=f"{name} acc_norm")
        ax3.set_ylabel(f"{name} acc_norm")
        ax3.legend(loc="lower left")
    fig.tight_layout()
    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
