"""Plotting helpers shared by every dataset: image grids, curves, latent scatter, accuracy vs q,
metrics against the labelled budget.

Every function writes one PNG and closes its figure (safe for long runs and headless machines).
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

GRID_PAD = 2  # pixels of white between the tiles of an image grid
# the vertical lines that mark moments in training curves, one style each
MARK_STYLES = ("--", ":", "-.", (0, (5, 2, 1, 2, 1, 2)))
LABEL_INCH_PER_CHAR = 0.065  # width of one character of a 7-point row label


def image_grid(images, path, row_labels=None, col_labels=None, title=None, cell=1.0):
    """images: (R, C, channels, H, W) in [0, 1], 1 channel (grey) or 3 (RGB) -> one PNG: the
    tiles laid out by torchvision's make_grid, rows and columns labelled at their centres.
    Margins are sized for the labels, so long entity names are never cut off."""
    # imported here: torchvision takes seconds to import (it loads torch._dynamo), and a run
    # that stops on bad input, or before its pictures, should not wait for it
    from torchvision.utils import make_grid

    images = torch.as_tensor(images).detach().float().cpu().clamp(0, 1)
    rows, cols, _, height, width = images.shape
    grid = make_grid(images.flatten(0, 1), nrow=cols, padding=GRID_PAD, pad_value=1.0)
    left = 0.15 + LABEL_INCH_PER_CHAR * max((len(str(x)) for x in row_labels or []), default=0)
    top = (0.3 if col_labels is not None else 0.1) + (0.3 if title else 0.0)
    bottom, right = 0.1, 0.1
    fig_w, fig_h = left + cell * cols + right, bottom + cell * rows + top
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((left / fig_w, bottom / fig_h, cell * cols / fig_w, cell * rows / fig_h))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest", aspect="auto")
    ax.set_xticks([GRID_PAD + (width + GRID_PAD) * c + width / 2 for c in range(cols)],
                  col_labels if col_labels is not None else [""] * cols)
    ax.set_yticks([GRID_PAD + (height + GRID_PAD) * r + height / 2 for r in range(rows)],
                  row_labels if row_labels is not None else [""] * rows)
    ax.xaxis.tick_top()
    ax.tick_params(length=0, labelsize=7)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.05 / fig_h, va="top")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def curves(rows: list[dict], groups: dict, path, x_key="epoch", log_panels=(), marks=None):
    """One panel per group {panel title: [column names]} of a metrics CSV (list of dicts).

    marks: {label: x} of moments in training (a phase starts), drawn as labelled vertical lines
    on every panel.
    """
    marks = marks or {}
    if len(marks) > len(MARK_STYLES):
        raise ValueError(f"{len(marks)} marks, but only {len(MARK_STYLES)} line styles to tell "
                         "them apart: add one to plots.MARK_STYLES")
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.2), squeeze=False)
    for ax, (title, keys) in zip(axes[0], groups.items()):
        for key in keys:
            points = [(float(r[x_key]), float(r[key])) for r in rows if r.get(key) not in ("", None)]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="." if len(points) < 30 else None, label=key.split("/")[-1])
        ax.set_title(title, fontsize=9)
        for (label, x), style in zip(marks.items(), MARK_STYLES):
            ax.axvline(x, color="grey", linestyle=style, linewidth=0.8, label=label)
        if title in log_panels:
            ax.set_yscale("log")
        ax.set_xlabel(x_key)
        if ax.get_lines():
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def pca_2d(z: np.ndarray, extra: np.ndarray | None = None):
    """Project codes (and optionally extra points) on the codes' first two principal axes."""
    mean = z.mean(0)
    _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
    axes = vt[:2].T
    proj = (z - mean) @ axes
    return proj, None if extra is None else (extra - mean) @ axes


def latent_scatter(z, labels, means, path, title="", names=None):
    """Codes projected to 2-D, coloured by entity, with component means marked."""
    proj, mean_proj = pca_2d(np.asarray(z), np.asarray(means))
    num = len(means)
    cmap = plt.get_cmap("gist_ncar", num + 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.scatter(proj[:, 0], proj[:, 1], c=labels, cmap=cmap, vmin=0, vmax=num, s=4, alpha=0.6)
    ax.scatter(mean_proj[:, 0], mean_proj[:, 1], c=np.arange(num), cmap=cmap, vmin=0, vmax=num,
               marker="X", s=70, edgecolors="black", linewidths=0.8)
    if names is not None:
        for k, (x, y) in enumerate(mean_proj):
            ax.annotate(names[k], (x, y), fontsize=5, alpha=0.8)
    ax.set_title(title or "latent codes (PCA), coloured by entity; X = component means",
                 fontsize=9)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def accuracy_vs_q(results: dict, qs, path, split="test"):
    """Clustering accuracy and acceptance against the confidence q."""
    acc = [results[f"{split}/cluster_acc@{q}"] for q in qs]
    accept = [results[f"{split}/cluster_accept@{q}"] for q in qs]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    positions = np.arange(len(qs))
    ax.plot(positions, acc, marker="o", label="accuracy among accepted")
    ax.plot(positions, accept, marker="s", label="acceptance")
    # where the acceptance of components that describe their codes lies (the codes of each
    # entity Gaussian about its component): a fraction q of them inside the q-ellipsoid
    ax.plot(positions, qs, color="grey", linestyle=":", label="acceptance = q (calibrated)")
    ax.set_xticks(positions, [str(q) for q in qs])
    ax.set_xlabel("confidence q (chi-square quantile)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"clustering on the {split} split", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def metric_vs_budget(series: dict, metrics, path, title=""):
    """One panel per metric against the labelled fraction of the training images (log axis),
    one colour per series ({label: rows}, rows: {budget, seed, fraction, metric: value}):
    every seed's value (dots) and the mean over seeds +- one standard deviation (line, band),
    each budget's point labelled with its images per entity."""
    cols = 4
    panels = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(panels, cols, figsize=(3.4 * cols, 2.8 * panels), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    ticks = sorted({round(100 * r["fraction"], 6) for rows in series.values() for r in rows})
    for ax, metric in zip(axes.flat, metrics):
        for (label, rows), colour in zip(series.items(), colours):
            points = [(r["budget"], 100 * r["fraction"], r[metric]) for r in rows
                      if r.get(metric) is not None]
            if not points:
                continue
            ax.scatter([x for _, x, _ in points], [y for _, _, y in points], s=12, alpha=0.6,
                       color=colour)
            budgets = sorted({b for b, _, _ in points})
            xs = [np.mean([x for b, x, _ in points if b == budget]) for budget in budgets]
            ys = [[y for b, _, y in points if b == budget] for budget in budgets]
            means, stds = np.array([np.mean(v) for v in ys]), np.array([np.std(v) for v in ys])
            ax.plot(xs, means, color=colour, label=label)
            ax.fill_between(xs, means - stds, means + stds, color=colour, alpha=0.2)
            for budget, x, y in zip(budgets, xs, means):
                ax.annotate(str(budget), (x, y), textcoords="offset points", xytext=(0, 4),
                            fontsize=6, color=colour, ha="center")
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks], fontsize=7)
        ax.minorticks_off()
        ax.set_title(metric.removeprefix("test/"), fontsize=9)
        ax.set_xlabel("labelled images, % of training images", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, title="numbers: per entity", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
