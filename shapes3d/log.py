"""The pictures of a Shapes3D run, written into its run folder:

training_curves.png    losses and validation metrics per epoch
latent_space.png       test codes on their first two principal axes, coloured by entity
traversals.png         one test image's code moved along each latent axis, decoded
relation_chains.png    test images pushed through each relation again and again, decoded
component_samples.png  decoded samples of mixture components (one row per entity)
within_entity.png      a few components walked along their widest principal axes, decoded:
                       the nuisances each entity holds
accuracy_vs_q.png      clustering accuracy and acceptance against the confidence q
"""

import numpy as np
import torch

from common import gmm, plots
from common.schedule import decay_start

# Readable names of each entity factor's bins, used where the config keeps the default bins.
BIN_NAMES = {"object_hue": tuple(f"hue{h / 10:.1f}" for h in range(10)),
             "shape": ("cube", "cylinder", "sphere", "capsule"),
             "scale": ("small", "medium", "large")}
CHAIN_STEPS = 6
TRAVERSAL_STEPS = 9
SAMPLES_PER_COMPONENT = 8
MAX_COMPONENT_ROWS = 30  # more entities than this: an evenly spaced selection is shown
WITHIN_ENTITIES = 4  # entities in within_entity.png: the showcase's, then evenly spaced
WITHIN_AXES = 3  # principal axes of each, widest first
WITHIN_SD = 2.0  # each walk spans -WITHIN_SD to +WITHIN_SD standard deviations


def entity_names(space) -> list[str]:
    """Entity e's name in words ("heart, left, top") where the bins are the default ones."""
    usable = {k: list(v) for k, v in BIN_NAMES.items()
              if k in space.bins and len(space.bins[k]) == len(v)}
    return [space.entity_name(e, usable) for e in range(space.num_entities)]


def showcase(data) -> int:
    """A test image whose object stands out, to start the traversals and relation chains from:
    a medium object (so both bigger and smaller show) whose hue is at least 3 steps round the
    colour circle from the floor's and the wall's. The first test image if none is."""
    classes, names = data.classes["test"], data.space.factor_names
    hue, floor, wall, scale = (classes[:, names.index(k)]
                               for k in ("object_hue", "floor_hue", "wall_hue", "scale"))

    def far(a, b):
        return torch.minimum((a - b) % 10, (b - a) % 10) >= 3

    hits = (far(hue, floor) & far(hue, wall) & (scale >= 3) & (scale <= 4)).nonzero()
    return int(hits[0]) if len(hits) else 0


@torch.no_grad()
def decode(model, z) -> torch.Tensor:
    """Codes (..., D) -> pictures (..., C, 64, 64) in [0, 1]."""
    flat = model.decode_images(z.reshape(-1, z.shape[-1]))
    return flat.reshape(*z.shape[:-1], *flat.shape[1:])


def phase_marks(cfg: dict) -> dict:
    """Where the warm-up ends, the learning-rate decay starts, the pseudo-labels join the
    supervised term (train.pseudo_per_entity) and the covariances are first calibrated
    (prior.calibrate_epochs): between two epochs' rows. The supervised loss jumps at the last
    two, and the mark says why."""
    train = cfg["train"]
    end = train["warmup_epochs"] + train["relational_epochs"]
    marks = {"warm-up ends": train["warmup_epochs"] + 0.5}
    start = decay_start(train)
    if start is not None:
        marks["lr decay starts"] = start + 0.5
    if train["pseudo_per_entity"] > 0 and train["pseudo_after"] < train["relational_epochs"]:
        marks["pseudo-labels begin"] = train["warmup_epochs"] + train["pseudo_after"] + 0.5
    calibrated = min(cfg["prior"]["calibrate_epochs"], train["relational_epochs"])
    if calibrated > 0:
        marks["calibration begins"] = end - calibrated + 0.5
    return marks


@torch.no_grad()
def relation_chains(model, rel, data, source: int) -> torch.Tensor:
    """Test image `source` through each relation CHAIN_STEPS times, decoded: (R, CHAIN_STEPS + 2,
    C, 64, 64), each row the input, its reconstruction, then the chain."""
    picture = data.batch("test", slice(source, source + 1))  # (1, C, 64, 64)
    num_rel = len(data.space.relation_names)
    relation = torch.arange(num_rel, device=picture.device)
    chain = [model.encoder(picture).repeat(num_rel, 1)]
    for _ in range(CHAIN_STEPS):
        chain.append(rel(chain[-1], relation))
    decoded = decode(model, torch.stack(chain, dim=1))  # (R, steps + 1, C, 64, 64)
    return torch.cat([picture[None].expand(num_rel, -1, -1, -1, -1), decoded], dim=1)


@torch.no_grad()
def within_entity(model, prior, entities) -> tuple[torch.Tensor, list[tuple[int, int, float]]]:
    """Each entity's component walked from its mean along its WITHIN_AXES widest principal
    axes, -WITHIN_SD to +WITHIN_SD standard deviations, decoded:
    (E * WITHIN_AXES, TRAVERSAL_STEPS, C, 64, 64),
    and per row (entity, axis, that axis's share of the component's variance)."""
    means = prior.means.detach()[entities]  # (E, D)
    sd, axes = gmm.principal_axes(prior.chol[entities])  # (E, D), (E, D, D)
    offsets = torch.linspace(-WITHIN_SD, WITHIN_SD, TRAVERSAL_STEPS, device=means.device)
    steps = sd[:, None, :WITHIN_AXES] * offsets[None, :, None]  # (E, steps, A)
    walks = means[:, None, None] + torch.einsum("esa,eda->easd", steps,
                                                axes[:, :, :WITHIN_AXES])  # (E, A, steps, D)
    share = sd.pow(2) / sd.pow(2).sum(1, keepdim=True)
    rows = [(int(e), a, float(share[i, a])) for i, e in enumerate(entities)
            for a in range(WITHIN_AXES)]
    return decode(model, walks.flatten(0, 1)), rows


@torch.no_grad()
def board_pictures(board, epoch: int, model, rel, data) -> None:
    """The relation chains at an evaluation, for TensorBoard (common/board.py)."""
    model.eval()
    rel.eval()
    board.pictures(epoch, "relation_chains", relation_chains(model, rel, data, showcase(data)))
    model.train()
    rel.train()


@torch.no_grad()
def write_pictures(run, model, rel, prior, data, cfg, results, z) -> None:
    """Every picture listed above, into run.path; z: the test split's codes (final_metrics
    has them already)."""
    model.eval()
    rel.eval()
    out, names, source = run.path, entity_names(data.space), showcase(data)
    plots.curves(run.read_metrics(), {
        "reconstruction": ["train/recon"],
        "relational and supervised": ["train/rel", "train/sup"],
        "adversarial game": ["train/disc", "train/gen"],
        "validation": ["val/cluster_acc@0.99", "val/cluster_accept@0.99",
                       "val/rel_acc_latent", "val/rel_acc_data"],
    }, out / "training_curves.png", log_panels=("reconstruction",),
        marks=phase_marks(cfg))

    labels = data.entities["test"]
    plots.latent_scatter(z.cpu().numpy(), labels.cpu().numpy(), prior.means.detach().cpu().numpy(),
                         out / "latent_space.png", names=names)

    # Traversal: each latent axis from -2.5 to +2.5 test-set standard deviations about one code.
    offsets = torch.linspace(-2.5, 2.5, TRAVERSAL_STEPS, device=z.device)
    dims = z.shape[1]
    grid = z[source].repeat(dims, TRAVERSAL_STEPS, 1)  # (D, steps, D)
    axis = torch.arange(dims, device=z.device)
    grid[axis, :, axis] += offsets[None] * z.std(0)[:, None]
    plots.image_grid(decode(model, grid), out / "traversals.png",
                     row_labels=[f"z{d}" for d in range(dims)],
                     col_labels=[f"{o:+.1f}sd" for o in offsets.tolist()],
                     title=f"latent traversals around a test image of "
                           f"{names[int(labels[source])]}")

    plots.image_grid(relation_chains(model, rel, data, source), out / "relation_chains.png",
                     row_labels=list(data.space.relation_names),
                     col_labels=["input", "recon"] + [f"x{k}" for k in range(1, CHAIN_STEPS + 1)],
                     title=f"relation chains from {names[int(labels[source])]}: ReL applied "
                           "repeatedly, decoded")

    # Per-component samples (an evenly spaced selection when there are many entities).
    num = data.space.num_entities
    shown = np.unique(np.linspace(0, num - 1, min(num, MAX_COMPONENT_ROWS)).round().astype(int))
    components = torch.as_tensor(shown, device=z.device)
    samples = prior.sample(components.repeat_interleave(SAMPLES_PER_COMPONENT))
    title = "decoded samples of each mixture component"
    if len(shown) < num:
        title += f" ({len(shown)} of {num} entities)"
    plots.image_grid(decode(model, samples.reshape(len(shown), SAMPLES_PER_COMPONENT, -1)),
                     out / "component_samples.png", row_labels=[names[e] for e in shown],
                     cell=0.7, title=title)

    first = int(labels[source])
    others = np.linspace(0, num - 1, WITHIN_ENTITIES).round().astype(int)
    picked = [first] + [int(e) for e in others if e != first][:WITHIN_ENTITIES - 1]
    walks, rows = within_entity(model, prior, torch.as_tensor(picked, device=z.device))
    plots.image_grid(walks, out / "within_entity.png",
                     row_labels=[f"{names[e]}: axis {a + 1} ({share:.0%})"
                                 for e, a, share in rows],
                     col_labels=[f"{o:+.1f}sd" for o in np.linspace(-WITHIN_SD, WITHIN_SD,
                                                                     TRAVERSAL_STEPS)],
                     title="inside an entity: each component from its mean along its widest "
                           "principal axes (share of its variance), decoded")

    plots.accuracy_vs_q(results, cfg["eval"]["qs"], out / "accuracy_vs_q.png")
    model.train()
    rel.train()
