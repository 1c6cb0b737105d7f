"""Everything measured on a trained model (METHOD.md, Evaluation), for every dataset.

- latent metrics (common/metrics.py): clustering accuracy and acceptance at each q, relation
  accuracy on prior samples ("latent") and on encoded held-out images ("data");
- decoded metrics: pictures decoded from moved codes and from component samples, read by a
  ground-truth factor classifier (common/classifier.py);
- literature metrics (common/disentanglement.py): MIG, SAP, DCI, FactorVAE, BetaVAE.

Keys are '<split>/<metric>', e.g. 'test/rel_acc_decoded/left'.
"""

from pathlib import Path

import torch

from common import classifier, disentanglement, metrics
from common.data import Data, resolve_paths

COMPONENT_SAMPLES = 50  # decoded samples per mixture component


@torch.no_grad()
def encode(model, data: Data, split: str) -> torch.Tensor:
    """(n, z_dim) codes of a whole split, in chunks."""
    return torch.cat([model.encoder(x) for x in data.chunks(split)])


@torch.no_grad()
def evaluate(state, data: Data, cfg: dict, split: str) -> dict:
    """Reconstruction, clustering and relation metrics in latent space on one split."""
    model, rel, prior = state.model.eval(), state.rel.eval(), state.prior
    z = encode(model, data, split)
    recon = sum(float(state.recipe.reconstruction(model.decoder(part), x)) * len(part)
                for part, x in zip(z.split(1024), data.chunks(split)))
    out = {"recon_loss": recon / max(len(z), 1)}
    if bool(prior.fitted):
        means, chol, labels = prior.means.detach(), prior.chol, data.entities[split]
        names, e = data.space.relation_names, cfg["eval"]
        gen = torch.Generator(device=means.device).manual_seed(cfg["run"]["seed"])
        out.update(metrics.clustering(z, labels, means, chol, e["qs"]))
        out.update(metrics.relation_latent(rel, state.table, names, means, chol,
                                           e["rel_samples"], e["q"], generator=gen))
        out.update(metrics.relation_data(rel, z, labels, state.table, names, means, chol, e["q"]))
        out["min_separation"] = prior.min_separation()
    model.train()
    rel.train()
    return {f"{split}/{k}": v for k, v in out.items()}


@torch.no_grad()
def decoded(state, data: Data, cfg: dict, clf, heads, clf_acc: dict) -> dict:
    """What the decoded pictures show, read by the factor classifier, on the test split.

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
    model, rel, prior, space = state.model.eval(), state.rel.eval(), state.prior, data.space
    z = encode(model, data, "test")
    labels = data.entities["test"]
    truth = classifier.targets(data, "test", heads)
    keep = classifier.reliable_nuisances(heads, clf_acc)

    def read(codes):  # codes -> (predicted entity, predicted classes of every head)
        pred = clf.predict(model.decode_images(codes))
        return classifier.entity_of(pred, heads, space.bin_counts), pred

    entity, pred = read(z)
    out = {"recon_entity_acc_decoded": float((entity == labels).float().mean())}
    for i, head in enumerate(heads):
        out[f"recon_factor_acc_decoded/{head.factor}"] = float((pred[:, i] == truth[:, i])
                                                              .float().mean())
    for r, name in enumerate(space.relation_names):
        relation = torch.full((len(z),), r, device=z.device)
        entity, pred = read(rel(z, relation))
        out[f"rel_acc_decoded/{name}"] = float((entity == state.table[r, labels]).float().mean())
        kept = (pred[:, keep] == truth[:, keep]).all(dim=1)
        out[f"rel_nuisance_kept_decoded/{name}"] = float(kept.float().mean())
    for key in ("rel_acc_decoded", "rel_nuisance_kept_decoded"):
        per = [out[f"{key}/{name}"] for name in space.relation_names]
        out[key] = sum(per) / len(per)

    gen = torch.Generator(device=prior.means.device).manual_seed(cfg["run"]["seed"])
    components = torch.arange(space.num_entities, device=z.device)
    components = components.repeat_interleave(COMPONENT_SAMPLES)
    entity, _ = read(prior.sample(components, generator=gen))
    per_component = (entity == components).float().view(space.num_entities, -1).mean(dim=1)
    out["component_acc_decoded"] = float(per_component.mean())
    out["component_acc_decoded_min"] = float(per_component.min())
    model.train()
    rel.train()
    return {f"test/{k}": v for k, v in out.items()}


@torch.no_grad()
def literature_scores(state, data: Data) -> dict:
    """MIG, SAP, DCI, FactorVAE, BetaVAE of the test codes against every ground-truth factor
    (DCI's predictors are fitted on the validation codes)."""
    codes = {s: encode(state.model.eval(), data, s).cpu().numpy() for s in ("val", "test")}
    classes = {s: data.classes[s].cpu().numpy() for s in ("val", "test")}
    scores = disentanglement.scores_from_codes(codes["val"], classes["val"], codes["test"],
                                               classes["test"], seed=0)
    state.model.train()
    return {f"test/{k}": v for k, v in scores.items()}


def final_metrics(state, data: Data, cfg: dict, repo_root: Path) -> dict:
    """Every metric of a finished run: test split (latent, decoded, literature), then val."""
    results = evaluate(state, data, cfg, "test")
    _, cache_dir = resolve_paths(cfg, repo_root)
    settings = {**classifier.SETTINGS, "steps": cfg["eval"]["classifier_steps"]}
    clf, heads, clf_acc = classifier.load_or_train(data, cfg["data"]["nuisances"], cache_dir,
                                                   state.recipe.name, settings)
    results.update({f"classifier/test_acc/{k}": v for k, v in clf_acc.items()})
    results["classifier/reliable_nuisances"] = ",".join(
        heads[i].factor for i in classifier.reliable_nuisances(heads, clf_acc)) or "none"
    results.update(decoded(state, data, cfg, clf, heads, clf_acc))
    results.update(literature_scores(state, data))
    results.update(evaluate(state, data, cfg, "val"))
    return results
