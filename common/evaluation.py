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

import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

from common import classifier, gmm, metrics
from common.checkpoint import atomic_write
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
def latent(z, labels, move: Callable, means, chol, table, space, eval_cfg: dict,
           seed: int) -> dict:
    """Clustering of codes z (n, D) with entity labels (n,), per entity factor too, and
    relation accuracy of move(codes, relation ids) -> codes on prior samples and on z;
    table (R, K) targets; space the entity space (its factors and relations)."""
    generator = torch.Generator(device=means.device).manual_seed(seed)
    relation_names = space.relation_names
    out = metrics.clustering(z, labels, means, chol, eval_cfg["qs"])
    entity_bins = torch.as_tensor(space.bins_of_entity(np.arange(space.num_entities)),
                                  device=means.device)
    out.update(metrics.factor_accuracy(z, labels, means, chol, entity_bins,
                                       space.entity_factors))
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


def to_uint8(pictures) -> torch.Tensor:
    """Pictures (N, C, H, W) in [0, 1] -> (N, H, W, C) uint8 in [0, 255], the layout of the
    datasets' files."""
    return pictures.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def from_uint8(pictures) -> torch.Tensor:
    """to_uint8's inverse: (N, H, W, C) uint8 -> (N, C, H, W) float in [0, 1]."""
    return pictures.permute(0, 3, 1, 2).float().div_(255)


@torch.no_grad()
def decoded_pictures(z, data: Data, decode: Callable, move: Callable, seed: int = 0,
                     max_images: int = DECODED_IMAGES) -> dict:
    """What the model draws of the test split (at most max_images of it, a subset drawn with
    `seed`): the pictures the decoded metrics read, and what decoded.npz holds.

    z: test codes; decode(codes) -> pictures in [0, 1]; move(codes, relation ids) -> codes.
    Returns index (n,) positions in the test split; images, recon (n, 64, 64, C) uint8: the
    test pictures and their decoded codes; moved (R, n, 64, 64, C) uint8: the decoded codes
    moved by each relation. The metrics read these uint8 pictures, so whoever scores the
    export with our classifier gets our numbers.
    """
    index = torch.arange(len(z), device=z.device)
    if len(z) > max_images:
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(z), generator=generator)[:max_images].sort().values
        index = index.to(z.device)
    z = z[index]
    moved = [to_uint8(decode(move(z, torch.full((len(z),), r, device=z.device))))
             for r in range(len(data.space.relation_names))]
    return {"index": index, "images": to_uint8(data.batch("test", index)),
            "recon": to_uint8(decode(z)), "moved": torch.stack(moved)}


@torch.no_grad()
def decoded(pictures: dict, data: Data, table, component_pictures, clf, heads,
            clf_acc: dict) -> dict:
    """What the decoded pictures show, read by the factor classifier.

    pictures: decoded_pictures of the test split; component_pictures: decoded samples of every
    component in order (component_samples), (K * n, C, 64, 64) in [0, 1].

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
    space, index = data.space, pictures["index"]
    labels = data.entities["test"][index]
    truth = classifier.targets(data, "test", heads)[index.to(data.classes["test"].device)]
    keep = classifier.reliable_nuisances(heads, clf_acc)

    def read(uint8):  # pictures -> (predicted entity, predicted classes of every head)
        pred = clf.predict(from_uint8(uint8))
        return classifier.entity_of(pred, heads, space.bin_counts), pred

    entity, pred = read(pictures["recon"])
    out = {"recon_entity_acc_decoded": float((entity == labels).float().mean())}
    for i, head in enumerate(heads):
        out[f"recon_factor_acc_decoded/{head.factor}"] = float((pred[:, i] == truth[:, i])
                                                              .float().mean())
    for r, name in enumerate(space.relation_names):
        entity, pred = read(pictures["moved"][r])
        out[f"rel_acc_decoded/{name}"] = float((entity == table[r, labels]).float().mean())
        kept = (pred[:, keep] == truth[:, keep]).all(dim=1)
        out[f"rel_nuisance_kept_decoded/{name}"] = float(kept.float().mean())
    for key in ("rel_acc_decoded", "rel_nuisance_kept_decoded"):
        per = [out[f"{key}/{name}"] for name in space.relation_names]
        out[key] = sum(per) / len(per)

    entity, _ = read(to_uint8(component_pictures))
    components = torch.arange(space.num_entities, device=entity.device)
    per_component = (entity == components.repeat_interleave(len(entity) // len(components))
                     ).float().view(space.num_entities, -1).mean(dim=1)
    out["component_acc_decoded"] = float(per_component.mean())
    out["component_acc_decoded_min"] = float(per_component.min())
    return out


def save_decoded(path, pictures: dict, data: Data, table) -> None:
    """decoded.npz, for judges other than our classifier (README, Metrics): decoded_pictures'
    arrays (index, images, recon, moved), with the test pictures' raw factor indices
    (classes (n, F), in factor_names order), entity ids (entities (n,)), each relation's
    target entity of each picture (targets (R, n)), and the names of factors and relations.
    Deflated at zlib level 1 (np.load reads any level): flat backgrounds make it 0.6 of its raw
    size, within 2 % of the default level 6, in half the time."""
    space, index = data.space, pictures["index"]
    labels = data.entities["test"][index]
    arrays = {key: pictures[key].cpu().numpy() for key in ("index", "images", "recon", "moved")}
    arrays.update(classes=data.classes["test"][index].cpu().numpy(),
                  entities=labels.cpu().numpy(), targets=table[:, labels].cpu().numpy(),
                  factor_names=np.array(space.factor_names),
                  relation_names=np.array(space.relation_names))
    atomic_write(path, lambda handle: write_npz(handle, arrays, level=1))


def write_npz(handle, arrays: dict, level: int) -> None:
    """np.savez_compressed's archive (one name.npy member per array) at a chosen zlib level."""
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


@contextmanager
def in_background(function: Callable, *args, **kwargs):
    """function(*args, **kwargs) on a thread while the body runs; yields its Future, whose
    result() waits for it and raises its error (call it: an error nobody asks for is lost).
    Worth it where the function leaves the GIL (scikit-learn's trees, zlib) while the body
    computes: the two share the cores."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(function, *args, **kwargs)


def literature(codes_fit, classes_fit, codes, classes, workers: int = 1) -> dict:
    """MIG, SAP, DCI, FactorVAE, BetaVAE of codes (n, D) against every ground-truth factor
    (classes (n, F)); DCI's predictors are fitted on codes_fit / classes_fit, on `workers`
    threads (the caller passes torch's, run.threads; the numbers do not depend on it)."""
    # imported here: scikit-learn takes seconds to import, and only a finished run needs it
    from common import disentanglement

    as_numpy = [t.cpu().numpy() for t in (codes_fit, classes_fit, codes, classes)]
    return disentanglement.scores_from_codes(*as_numpy, seed=0, workers=workers)
