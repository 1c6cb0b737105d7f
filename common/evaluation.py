"""What is measured on a trained model (README, Metrics), from explicit arguments: codes,
the networks as callables, the mixture's means and Cholesky factors, the relation table. Each
dataset's train.py decides what to pass.

- latent metrics (common/metrics.py): clustering accuracy and acceptance at each q, relation
  accuracy on prior samples ("latent") and on encoded held-out images ("data");
- decoded metrics: pictures decoded from moved codes and from component samples, read by a
  ground-truth factor classifier (common/classifier.py);
- literature metrics (common/disentanglement.py): MIG, SAP, DCI, FactorVAE, BetaVAE.

Keys carry no split prefix; the caller adds '<split>/'.
"""

from typing import Callable

import torch

from common import classifier, disentanglement, gmm, metrics
from common.data import Data

COMPONENT_SAMPLES = 50  # decoded samples per mixture component
# test images the decoded relation metrics read (a seeded subset of larger splits): each
# relation decodes and classifies them all, and an accuracy over 2,000 pictures has a standard
# error of at most 0.011, well under the differences the metrics are read for
DECODED_IMAGES = 2000


@torch.no_grad()
def encode(encoder: Callable, data: Data, split: str) -> torch.Tensor:
    """(n, z_dim) codes of a whole split, in chunks."""
    return torch.cat([encoder(x) for x in data.chunks(split)])


@torch.no_grad()
def latent(z, labels, move: Callable, means, chol, table, relation_names, eval_cfg: dict,
           seed: int) -> dict:
    """Clustering of codes z (n, D) with entity labels (n,), and relation accuracy of
    move(codes, relation ids) -> codes on prior samples and on z; table (R, K) targets."""
    generator = torch.Generator(device=means.device).manual_seed(seed)
    out = metrics.clustering(z, labels, means, chol, eval_cfg["qs"])
    out.update(metrics.relation_latent(move, table, relation_names, means, chol,
                                       eval_cfg["rel_samples"], eval_cfg["q"],
                                       generator=generator))
    out.update(metrics.relation_data(move, z, labels, table, relation_names, means, chol,
                                     eval_cfg["q"]))
    return out


@torch.no_grad()
def component_samples(means, chol, seed: int, per_component: int = COMPONENT_SAMPLES):
    """per_component samples of every component, component 0's first: (K * n, D)."""
    generator = torch.Generator(device=means.device).manual_seed(seed)
    components = torch.arange(len(means), device=means.device).repeat_interleave(per_component)
    return gmm.sample(means, chol, components, generator=generator)


def factor_classifier(data: Data, nuisances: dict, cache_dir, dataset: str, steps: int):
    """The cached factor classifier of these pictures (trained first if there is none):
    (classifier, heads, test accuracy per head, its metrics entries)."""
    settings = {**classifier.SETTINGS, "steps": steps}
    clf, heads, test_acc = classifier.load_or_train(data, nuisances, cache_dir, dataset, settings)
    entries = {f"classifier/test_acc/{k}": v for k, v in test_acc.items()}
    entries["classifier/reliable_nuisances"] = ",".join(
        heads[i].factor for i in classifier.reliable_nuisances(heads, test_acc)) or "none"
    return clf, heads, test_acc, entries


@torch.no_grad()
def decoded(z, data: Data, decode: Callable, move: Callable, table, component_codes, clf,
            heads, clf_acc: dict, seed: int = 0, max_images: int = DECODED_IMAGES) -> dict:
    """What the decoded pictures show, read by the factor classifier, on the test split (at
    most max_images of it, a subset drawn with `seed`).

    z: test codes; decode(codes) -> pictures in [0, 1]; move(codes, relation ids) -> codes;
    component_codes: samples of every component in order (component_samples).

    rel_acc_decoded/<r>: test image encoded, moved by relation r, decoded, classified: the
        fraction whose entity factors equal r's target;
    rel_nuisance_kept_decoded/<r>: the fraction whose nuisance factors (those the classifier
        reads reliably, classifier.RELIABLE) still equal the source image's;
    recon_entity_acc_decoded: the same read on plain reconstructions (what the autoencoder
        alone keeps: an upper bound for the relations);
    recon_factor_acc_decoded/<factor>: per factor the classifier reads, the fraction of
        reconstructions that show the source image's value (which factor the decoder loses);
    component_acc_decoded(_min): samples of each mixture component, decoded and classified:
        the fraction showing that component's entity (mean over components, worst component).
    """
    space, labels = data.space, data.entities["test"]
    truth = classifier.targets(data, "test", heads)
    keep = classifier.reliable_nuisances(heads, clf_acc)
    if len(z) > max_images:
        generator = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(z), generator=generator)[:max_images].sort().values
        z, labels, truth = (t[pick.to(t.device)] for t in (z, labels, truth))

    def read(codes):  # codes -> (predicted entity, predicted classes of every head)
        pred = clf.predict(decode(codes))
        return classifier.entity_of(pred, heads, space.bin_counts), pred

    entity, pred = read(z)
    out = {"recon_entity_acc_decoded": float((entity == labels).float().mean())}
    for i, head in enumerate(heads):
        out[f"recon_factor_acc_decoded/{head.factor}"] = float((pred[:, i] == truth[:, i])
                                                              .float().mean())
    for r, name in enumerate(space.relation_names):
        relation = torch.full((len(z),), r, device=z.device)
        entity, pred = read(move(z, relation))
        out[f"rel_acc_decoded/{name}"] = float((entity == table[r, labels]).float().mean())
        kept = (pred[:, keep] == truth[:, keep]).all(dim=1)
        out[f"rel_nuisance_kept_decoded/{name}"] = float(kept.float().mean())
    for key in ("rel_acc_decoded", "rel_nuisance_kept_decoded"):
        per = [out[f"{key}/{name}"] for name in space.relation_names]
        out[key] = sum(per) / len(per)

    entity, _ = read(component_codes)
    components = torch.arange(space.num_entities, device=z.device)
    per_component = (entity == components.repeat_interleave(len(entity) // len(components))
                     ).float().view(space.num_entities, -1).mean(dim=1)
    out["component_acc_decoded"] = float(per_component.mean())
    out["component_acc_decoded_min"] = float(per_component.min())
    return out


def literature(codes_fit, classes_fit, codes, classes) -> dict:
    """MIG, SAP, DCI, FactorVAE, BetaVAE of codes (n, D) against every ground-truth factor
    (classes (n, F)); DCI's predictors are fitted on codes_fit / classes_fit."""
    as_numpy = [t.cpu().numpy() for t in (codes_fit, classes_fit, codes, classes)]
    return disentanglement.scores_from_codes(*as_numpy, seed=0)
