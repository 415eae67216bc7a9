"""Learning curves of settings compared across seeds: the IQM with its 95% stratified-bootstrap band."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qiter.errors import QiterError
from qiter.studies.report import Group, iqm_curve, q_bound

__all__ = ["plot_curves", "plot_path"]


def plot_path(out: str | Path) -> Path:
    """The image file a plot goes to (``.png`` added if missing), checked writable: call it before the
    work, so a bad ``--out`` is one line at once.

    :raises QiterError: A missing folder, a file in the way, a folder that cannot be written.
    """
    from qiter.runs import check_writable

    path = Path(out)
    if path.suffix.lower() != ".png":
        path = path.with_name(path.name + ".png")
    if not path.parent.exists():
        raise QiterError(f"--out {out}: folder {path.parent} does not exist")
    check_writable(path.parent, f"--out {out}")
    if path.is_dir():
        raise QiterError(f"--out {out}: {path} is a folder, not an image file")
    return path


def plot_curves(
    groups: Sequence[Group], out: str | Path, title: str | None = None, metric: str = "return"
) -> Path:
    """Draw each setting's evaluation return (or mean Q-value) against environment steps into a PNG.

    :param groups: The settings (:func:`~qiter.studies.report.group_runs`).
    :param out: The image file (``.png`` is added if missing); written only once the plot is made.
    :param title: The title; default: the environment and the number of runs per setting.
    :param metric: ``"return"`` (the periodic greedy evaluation) or ``"mean_q"`` (the mean Q-value of the
        minibatches, from ``train.csv``), drawn with the bound ``max_reward / (1 - gamma)`` where a config
        declares ``max_reward``.
    :return: The path written.
    """
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window (and no display needed)
    import matplotlib.pyplot as plt

    path = plot_path(out)
    # All computed before the file is opened.
    curves = [(group, iqm_curve(group, metric=metric)) for group in groups]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    try:
        for group, (steps, point, low, high) in curves:
            # Markers where there are few points (a single evaluation would draw no line at all).
            marker = "o" if len(steps) <= 12 else None
            label = f"{group.label} ({len(group.runs)} runs)"
            (line,) = ax.plot(steps, point, label=label, linewidth=1.8, marker=marker, markersize=4)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        if metric == "mean_q":
            bounds = sorted({b for g in groups if (b := q_bound(g.runs[0].config)) is not None})
            # A critic that runs away reaches thousands of times its bound: a symmetric log scale keeps the
            # sane curves readable next to it (linear up to the bound, logarithmic beyond).
            scale = max([abs(b) for b in bounds] + [1.0])
            if max(float(abs(c[3]).max()) for _, c in curves) > 20 * scale:
                ax.set_yscale("symlog", linthresh=scale)
            for bound in bounds:
                ax.axhline(
                    bound,
                    color="black",
                    linestyle="--",
                    linewidth=1,
                    label=f"max_reward / (1 - gamma) = {bound:g}",
                )
        env_ids = sorted({str(r.config.get("env_id")) for g in groups for r in g.runs})
        ax.set_title(title or f"{', '.join(env_ids)}: IQM across seeds, 95% stratified-bootstrap CI")
        ax.set_xlabel("environment steps")
        ax.set_ylabel(
            "greedy evaluation return\n(last point: the final evaluation, as in qiter report)"
            if metric == "return"
            else "mean Q-value of the minibatches"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
