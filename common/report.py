"""report.md: a one-page summary of a run, readable on GitHub as it is.

The config that matters at a glance, every metric of metrics.json in one table (test and
validation side by side), the relations one per row, and the pictures inline; a sentence
under the headline compares the last validation pass with the best, since a run keeps its
last epoch (flagged as a late drop when it fell by more than LATE_DROP).
"""

import json
import math
import sys

from common.checkpoint import atomic_write
from common.runlog import RunFolder

# (file, caption) in reading order; pictures a run did not write are skipped
PICTURES = (
    ("relation_chains.png", "Relation chains: a test image moved by each relation again and "
                            "again, decoded"),
    ("component_samples.png", "Decoded samples of every mixture component, one row per entity"),
    ("traversals.png", "Latent traversals around one test image"),
    ("accuracy_vs_q.png", "Clustering accuracy and acceptance against the confidence q"),
    ("latent_space.png", "Test codes on their first two principal axes"),
    ("training_curves.png", "Training curves"),
)

HEADLINE = (
    ("cluster_acc@0.99", "clustering accuracy at q=0.99 (among accepted)"),
    ("cluster_accept@0.99", "acceptance at q=0.99"),
    ("rel_acc_latent", "relation accuracy on prior samples"),
    ("rel_acc_data", "relation accuracy on encoded test images"),
    ("rel_acc_decoded", "relation accuracy of decoded pictures (factor classifier)"),
    ("component_acc_decoded", "decoded component samples showing their entity"),
    ("recon_loss", "reconstruction loss (nats per image)"),
)

CONFIG_KEYS = ("run.seed", "data.path", "data.labelled_per_entity", "data.labelled_per_bin",
               "data.nuisances",
               "model.z_dim", "train.warmup_epochs", "train.relational_epochs",
               "train.lr_decay_epochs", "train.amp", "train.batch_size", "train.rel_loss",
               "train.rel_noise", "train.rel_codes",
               "train.sup_loss", "train.sup_weight", "train.consistency_weight",
               "train.adv_weight",
               "prior.gm_cov", "prior.learn_means", "prior.min_separation")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _lookup(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# the validation clustering accuracy a run may lose after its best epoch before the report says so
LATE_DROP = 0.05
VAL_ACC, VAL_ACCEPT = "val/cluster_acc@0.99", "val/cluster_accept@0.99"


def validation_sentence(history: list[dict]) -> tuple[str, bool] | None:
    """One sentence on the validation passes of metrics.csv (the last against the best) and
    whether the last lost more than LATE_DROP (a run keeps its last epoch, not its best);
    None when there was no readable pass."""
    try:
        rows = [(int(r["epoch"]), float(r[VAL_ACC]), float(r.get(VAL_ACCEPT) or "nan"))
                for r in history if r.get(VAL_ACC)]
    except (KeyError, ValueError):  # a metrics.csv this code did not write: no sentence
        return None
    rows = [r for r in rows if math.isfinite(r[1])]
    if not rows:
        return None
    best, last = max(rows, key=lambda r: r[1]), rows[-1]
    text = (f"Validation clustering at q=0.99 after epoch {last[0]}, the last evaluated: "
            f"{last[1]:.3f} (acceptance {last[2]:.3f})")
    text += (f"; the best, after epoch {best[0]}: {best[1]:.3f} (acceptance {best[2]:.3f})."
             if best[1] > last[1] else ", the best of the run.")
    return text, best[1] - last[1] > LATE_DROP


def _validation_lines(validation: tuple[str, bool] | None) -> list[str]:
    if validation is None:
        return []
    text, dropped = validation
    if dropped:
        text = (f"**Late drop**: {text} The run keeps its last epoch, so the test numbers "
                "below are the dropped ones; training_curves.png shows when it happened.")
    return ["", text]


def render(run_name: str, dataset: str, cfg: dict, results: dict, pictures: list[str],
           validation: tuple[str, bool] | None = None) -> str:
    """report.md's text; validation is validation_sentence of the run's metrics.csv."""
    lines = [f"# {run_name}", ""]
    budget = results.get("labelled_images"), results.get("train_images")
    share = f" ({100 * budget[0] / budget[1]:.1f} %)" if all(budget) else ""
    lines += [f"{dataset}, {results.get('epochs', '?')} epochs, "
              f"{_fmt(results.get('wall_time_s', float('nan')))} s of training, "
              f"{budget[0]} labelled of {budget[1]} training images{share}.", ""]
    total = cfg["train"]["warmup_epochs"] + cfg["train"]["relational_epochs"]
    if results.get("epochs") != total:
        lines += [f"**Partial**: the run stopped after epoch {results.get('epochs')} of "
                  f"{total}; these numbers (metrics_partial.json) are not a finished run's.", ""]

    lines += ["| headline (test split) | value |", "|---|---|"]
    lines += [f"| {text} | {_fmt(results[f'test/{key}'])} |" for key, text in HEADLINE
              if f"test/{key}" in results]
    lines += _validation_lines(validation)

    lines += ["", "## Config", "", "| key | value |", "|---|---|"]
    for key in CONFIG_KEYS:
        value = _lookup(cfg, key)
        if key == "data.path" and not value:
            value = "(procedural stand-in)"
        if value is not None:
            lines.append(f"| `{key}` | `{json.dumps(value) if not isinstance(value, str) else value}` |")
    lines += ["", "<details><summary>full config.json</summary>", "", "```json",
              json.dumps(cfg, indent=2), "```", "", "</details>"]

    names = sorted({k.split("/", 2)[2] for k in results
                    if k.startswith("test/rel_acc_latent/")})
    if names:
        cols = ("rel_acc_latent", "rel_accept_latent", "rel_acc_data", "rel_accept_data",
                "rel_acc_decoded", "rel_nuisance_kept_decoded")
        lines += ["", "## Relations (test split)", "",
                  "| relation | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for name in names:
            cells = [_fmt(results.get(f"test/{c}/{name}", "")) for c in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")

    lines += ["", "## Every metric", "", "| metric | test | val |", "|---|---|---|"]
    metric_names = sorted({k.split("/", 1)[1] for k in results if k.startswith(("test/", "val/"))})
    for name in metric_names:
        lines.append(f"| {name} | {_fmt(results.get(f'test/{name}', ''))} | "
                     f"{_fmt(results.get(f'val/{name}', ''))} |")
    for key in sorted(k for k in results if not k.startswith(("test/", "val/"))):
        lines.append(f"| {key} | {_fmt(results[key])} | |")

    lines += ["", "## Pictures", ""]
    for file, caption in PICTURES:
        if file in pictures:
            lines += [f"**{caption}**", "", f"![{caption}]({file})", ""]
    return "\n".join(lines) + "\n"


def write(run: RunFolder, dataset: str, cfg: dict, results: dict) -> None:
    """report.md, written at once; a late drop is also said on stderr, where the run's
    progress lines are."""
    validation = validation_sentence(run.read_metrics())
    pictures = sorted(p.name for p in run.path.glob("*.png"))
    text = render(run.path.name, dataset, cfg, results, pictures, validation)
    atomic_write(run.path / "report.md", lambda f: f.write(text.encode()))
    if validation and validation[1]:
        print(f"late drop: {validation[0]} The run keeps its last epoch "
              f"({run.path / 'report.md'})", file=sys.stderr)
