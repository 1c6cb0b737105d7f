"""Why a modular run's moved codes decode worse than its plain codes: what each block of the
code tells, and how the decoded result of a relation changes with where the moved block lands.

    python bench/block_probe.py RUN_DIR [--images 2000] [--json OUT.json]

RUN_DIR: a finished or stopped run of any folder with prior.kind=modular. Read on a seeded
subset of its test split (the one the decoded metrics read), by the run's factor classifier:

- leaks: a 15-nearest-neighbour classifier (scikit-learn) fitted on the training codes' one
  block, scored on the test codes, for every entity factor (the block's own should read near
  1; the others near chance, 1 / bins, when nothing leaks) and every nuisance that varies
  (read from its true value: an entity block that tells a nuisance carries it along when a
  relation moves the block; the free block should tell them);
- per relation, the decoded pictures of five landing points: ReL's output (`rel`, what the
  decoded metrics read); the moved block at the target bin's mean (`mean`); the source's place
  in its bin mapped to the target bin by the Cholesky frames (`matched`); the moved block taken
  from the code of the real picture with the target entity and the source's nuisances
  (`oracle_block`, the rest of the code the source's); and that picture's whole code
  (`oracle_full`, its reconstruction). Each: the fraction showing the target entity, the
  fraction keeping the reliable nuisances, and the mean squared distance of the moved block to
  the oracle's.

Every grid here is full factorial, so the real counterpart exists in some split. Where
oracle_block decodes far worse than oracle_full, the source's other blocks carry the old
value (or the nuisances) with them; where rel is far below oracle_block, ReL lands off the
place the encoder gives the counterpart.
"""

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch
from sklearn.neighbors import KNeighborsClassifier

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import classifier, evaluation, gmm, runtime  # noqa: E402
from common.checkpoint import load_checkpoint  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.runlog import RunFolder  # noqa: E402

NEIGHBOURS = 15
MOVES = ("rel", "mean", "matched", "oracle_block", "oracle_full")


def load(run_dir: Path):
    """(the folder's train module, its state restored, the run's config, its data)."""
    run = RunFolder.open(run_dir)
    dataset = load_checkpoint(run.checkpoint, map_location="cpu").get("dataset")
    train = importlib.import_module(f"{dataset}.train")
    cfg = train.saved_config(run)
    if cfg["prior"]["kind"] != "modular":
        raise UserError(f"{run_dir} has prior.kind={cfg['prior']['kind']}: the probe reads the "
                        "blocks of a prior.kind=modular run")
    _, device = runtime.setup(cfg)
    data = importlib.import_module(f"{dataset}.dataset").load_data(cfg, device, REPO)
    state = train.build_state(cfg, data, device)
    train.restore(state, run, device)
    state.model.eval()
    state.rel.eval()
    return train, state, cfg, data


def leaks(prior, space, z_train, z_test, targets_train: dict, targets_test: dict) -> dict:
    """{block: {factor: kNN test accuracy from that block alone}} for every factor of
    targets_* ({factor: (N,) class per code})."""
    names = [*space.entity_factors, "free"][:len(prior.block_dims)]
    out = {}
    for name, part, test_part in zip(names, prior.blocks(z_train), prior.blocks(z_test)):
        out[name] = {
            factor: float(KNeighborsClassifier(NEIGHBOURS).fit(part.cpu().numpy(), y)
                          .score(test_part.cpu().numpy(), targets_test[factor]))
            for factor, y in targets_train.items()}
    return out


def factor_targets(prior, space, entities, classes, nuisances) -> dict:
    """{factor: (N,) numpy class}: each entity factor's bin, then each nuisance that varies
    (its raw value, from classes: (N, factors) numpy)."""
    bins = prior.entity_bins[entities].cpu().numpy()
    out = {factor: bins[:, g] for g, factor in enumerate(space.entity_factors)}
    for factor, values in nuisances.items():
        if len(values) > 1:
            out[factor] = classes[:, space.factor_names.index(factor)]
    return out


def landing_points(state, z, counterpart, relation: int, f: int, sbins, tbins) -> dict:
    """The five codes of MOVES for codes z (N, D) moved by `relation` along block f."""
    prior = state.prior
    start = sum(prior.block_dims[:f])
    end = start + prior.block_dims[f]
    means, chol = prior.block_means[f].detach(), prior.block_chols()[f]

    def with_block(block):
        return torch.cat([z[:, :start], block, z[:, end:]], dim=1)

    white = gmm.whiten(z[:, start:end] - means[sbins], chol[sbins])
    return {
        "rel": state.rel(z, torch.full((len(z),), relation, device=z.device)),
        "mean": with_block(means[tbins]),
        "matched": with_block(gmm.sample(means, chol, tbins, eps=white)),
        "oracle_block": with_block(counterpart[:, start:end]),
        "oracle_full": counterpart,
    }


@torch.no_grad()
def probe(run_dir: Path, images: int = evaluation.DECODED_IMAGES) -> dict:
    train, state, cfg, data = load(run_dir)
    prior, space = state.prior, data.space
    splits = ("train", "val", "test")
    z = {s: evaluation.encode(state.model.encoder, data, s) for s in splits}
    _, cache_dir = train.resolve_paths(cfg, REPO)
    clf, heads, clf_acc, _ = evaluation.factor_classifier(
        data, cfg["data"]["nuisances"], cache_dir, train.DATASET, cfg["eval"]["classifier_steps"])
    keep = classifier.reliable_nuisances(heads, clf_acc)

    # the counterpart of every test picture: the picture of every split with the same raw
    # factor values but for the moved factor
    every_code = torch.cat([z[s] for s in splits])
    every_class = torch.cat([data.classes[s] for s in splits]).cpu().numpy()
    position = {tuple(c): i for i, c in enumerate(every_class)}

    index = torch.arange(len(z["test"]))
    if len(index) > images:
        index = torch.randperm(len(index), generator=torch.Generator().manual_seed(
            cfg["run"]["seed"]))[:images].sort().values
    index = index.to(z["test"].device)
    zt, classes = z["test"][index], data.classes["test"][index].cpu().numpy()
    labels = data.entities["test"][index]
    truth = classifier.targets(data, "test", heads)[index]
    nuisances = cfg["data"]["nuisances"]
    out = {"leaks": leaks(prior, space, z["train"], zt,
                          factor_targets(prior, space, data.entities["train"],
                                         data.classes["train"].cpu().numpy(), nuisances),
                          factor_targets(prior, space, labels, classes, nuisances)),
           "relations": {}}

    def read(codes):
        pred = clf.predict(evaluation.from_uint8(evaluation.to_uint8(train.draw(state, codes))))
        return classifier.entity_of(pred, heads, space.bin_counts), pred

    for r, name in enumerate(space.relation_names):
        f = space.relation_factors[r]
        factor = space.entity_factors[f]
        target = state.table[r, labels]
        sbins, tbins = prior.entity_bins[labels][:, f], prior.entity_bins[target][:, f]
        moved_classes = classes.copy()
        moved_classes[:, space.factor_names.index(factor)] = [space.bins[factor][b][0]
                                                              for b in tbins.tolist()]
        counterpart = every_code[[position[tuple(c)] for c in moved_classes]]
        block = slice(sum(prior.block_dims[:f]), sum(prior.block_dims[:f + 1]))
        out["relations"][name] = {}
        for move, codes in landing_points(state, zt, counterpart, r, f, sbins, tbins).items():
            entity, pred = read(codes)
            out["relations"][name][move] = {
                "target_entity": float((entity == target).float().mean()),
                "nuisances_kept": float((pred[:, keep] == truth[:, keep]).all(1).float().mean()),
                "block_distance": float((codes[:, block] - counterpart[:, block]).pow(2)
                                        .sum(1).mean()),
            }
    return out


def table(result: dict) -> str:
    lines = ["leaks (kNN accuracy of each factor from one block alone):"]
    for block, reads in result["leaks"].items():
        lines.append(f"  {block:14s} " + "  ".join(f"{k} {v:.3f}" for k, v in reads.items()))
    lines.append("relations: target entity / nuisances kept / squared distance to the oracle's "
                 "block")
    lines.append(f"  {'':10s} " + "".join(f"{m:>22s}" for m in MOVES))
    for name, moves in result["relations"].items():
        cells = "".join(f"{v['target_entity']:>9.3f} /{v['nuisances_kept']:.3f} /"
                        f"{v['block_distance']:<5.2f}" for v in moves.values())
        lines.append(f"  {name:10s} {cells}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--images", type=int, default=evaluation.DECODED_IMAGES)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = probe(args.run_dir, args.images)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
