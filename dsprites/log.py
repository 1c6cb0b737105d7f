"""The pictures of a dSprites run (PNG files in the run folder).

training_curves.png    losses and validation metrics per epoch
latent_space.png       test codes on their first two principal axes, coloured by entity
traversals.png         one test image's code moved along each latent axis, decoded
relation_chains.png    one test image pushed through each relation again and again, decoded
component_samples.png  decoded samples of every mixture component (one row per entity)
accuracy_vs_q.png      clustering accuracy and acceptance against the confidence q
"""

import numpy as np
import torch

from common import plots

CHAIN_STEPS = 6
TRAVERSAL_STEPS = 9
SAMPLES_PER_COMPONENT = 8
SHAPES = ("square", "ellipse", "heart")


def entity_names(space) -> list[str]:
    labels = {"shape": list(SHAPES), "posX": ["left", "centre", "right"],
              "posY": ["top", "middle", "bottom"]}
    usable = {k: v for k, v in labels.items()
              if k in space.bins and len(space.bins[k]) == len(v)}
    return [space.entity_name(e, usable) for e in range(space.num_entities)]


@torch.no_grad()
def decode(model, z):
    """Codes (..., D) -> images (..., 64, 64) in [0, 1], as numpy."""
    flat = z.reshape(-1, z.shape[-1])
    images = torch.sigmoid(model.decoder(flat)).squeeze(1)
    return images.reshape(*z.shape[:-1], *images.shape[-2:]).cpu().numpy()


@torch.no_grad()
def write_pictures(run, state, data, cfg, results) -> None:
    model, rel, prior = state.model.eval(), state.rel.eval(), state.prior
    out = run.path
    plots.curves(run.read_metrics(), {
        "reconstruction": ["train/recon"],
        "relational and supervised": ["train/rel", "train/sup"],
        "adversarial game": ["train/disc", "train/gen"],
        "validation": ["val/cluster_acc@0.99", "val/cluster_accept@0.99",
                       "val/rel_acc_latent", "val/rel_acc_data"],
    }, out / "training_curves.png", log_panels=("reconstruction",),
        phase_start=cfg["train"]["warmup_epochs"] + 0.5)  # dashed: warm-up ends

    images, labels = data.images["test"], data.entities["test"]
    z = model.encode_images(images)
    names = entity_names(data.space)
    plots.latent_scatter(z.cpu().numpy(), labels.cpu().numpy(), prior.means.detach().cpu().numpy(),
                         out / "latent_space.png", names=names)

    # Traversal: each latent axis from -2.5 to +2.5 test-set standard deviations about one code.
    offsets = torch.linspace(-2.5, 2.5, TRAVERSAL_STEPS, device=z.device)
    dims = z.shape[1]
    grid = z[0].repeat(dims, TRAVERSAL_STEPS, 1)  # (D, steps, D)
    axis = torch.arange(dims, device=z.device)
    grid[axis, :, axis] += offsets[None] * z.std(0)[:, None]
    plots.image_grid(decode(model, grid), out / "traversals.png",
                     row_labels=[f"z{d}" for d in range(dims)],
                     col_labels=[f"{o:+.1f}sd" for o in offsets.tolist()],
                     title=f"latent traversals around a test image of {names[int(labels[0])]}")

    # Relation chains: the same test image through each relation CHAIN_STEPS times.
    source = z[:1].repeat(len(data.space.relation_names), 1)
    relation = torch.arange(len(data.space.relation_names), device=z.device)
    chain = [source]
    for _ in range(CHAIN_STEPS):
        chain.append(rel(chain[-1], relation))
    chain = torch.stack(chain, dim=1)  # (R, steps + 1, D)
    decoded = decode(model, chain)
    inputs = images[:1].float().cpu().numpy()[0, 0][None, None].repeat(len(relation), 0)
    plots.image_grid(np.concatenate([inputs, decoded], axis=1), out / "relation_chains.png",
                     row_labels=list(data.space.relation_names),
                     col_labels=["input", "recon"] + [f"x{k}" for k in range(1, CHAIN_STEPS + 1)],
                     title="relation chains: ReL applied repeatedly, decoded")

    # Per-component samples.
    components = torch.arange(data.space.num_entities, device=z.device)
    samples = prior.sample(components.repeat_interleave(SAMPLES_PER_COMPONENT))
    plots.image_grid(decode(model, samples.reshape(len(components), SAMPLES_PER_COMPONENT, -1)),
                     out / "component_samples.png", row_labels=names, cell=0.7,
                     title="decoded samples of each mixture component")

    plots.accuracy_vs_q(results, cfg["eval"]["qs"], out / "accuracy_vs_q.png")
    model.train()
    rel.train()
