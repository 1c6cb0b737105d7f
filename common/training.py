"""The training loop of weak disentanglement, shared by every dataset folder.

A dataset folder's train.py hands its pieces (config, data, networks, prior, losses, pictures)
to this module as a Recipe. Read top to bottom: the three phases (METHOD.md), one epoch,
checkpoints, the run (train, finish), and the command line.

1. warm-up: a plain adversarial autoencoder against a simple prior; no labels;
2. adaptive prior init: one Gaussian component per entity, fitted to the encoded labelled set;
3. relational phase: reconstruction + label-conditioned adversarial game against the mixture
   + ReL on prior samples.
"""

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from common import config as configlib
from common import distributed, evaluation, losses, report, runtime
from common.augment import mirror
from common.checkpoint import load_checkpoint, save_checkpoint
from common.data import Data, batches
from common.errors import UserError
from common.mixture import MixturePrior
from common.networks import AbsAE, ReL
from common.runlog import RunFolder

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Recipe:
    """What one dataset folder hands to the shared training loop."""

    name: str  # run folders are <name>-<timestamp>
    config: dict  # config.CONFIG: the defaults
    presets: dict  # config.PRESETS: named sets of overrides
    validate: Callable  # (cfg) -> None; raises UserError naming the bad key
    load_data: Callable  # (cfg, device, repo_root) -> Data
    augment: Callable  # (images (B, C, 64, 64), cfg) -> corrupted inputs
    build_networks: Callable  # (cfg, space) -> (AbsAE, ReL)
    build_prior: Callable  # (cfg, space) -> MixturePrior
    warmup_prior: Callable  # (cfg, n, device) -> (n, z_dim) phase-1 prior samples
    reconstruction: Callable  # (logits, images) -> loss per image
    write_pictures: Callable  # (run, state, data, cfg, results) -> None


class TrainingDiverged(Exception):
    """A loss became NaN or infinite."""


@dataclass
class State:
    """Everything that changes during training (and goes into a checkpoint)."""

    recipe: Recipe
    model: AbsAE
    rel: ReL
    prior: MixturePrior
    ae_opt: torch.optim.Optimizer
    disc_opt: torch.optim.Optimizer
    rel_opt: torch.optim.Optimizer
    table: torch.Tensor  # (R, K) relation targets
    group: distributed.Group  # this process's place among torchrun's (rank 0 of 1 alone)
    device: torch.device
    amp: bool  # bf16 autocast in training forward passes
    epoch: int = 0  # epochs completed
    elapsed_s: float = 0.0  # training wall time over all sessions of this run


def build_state(recipe: Recipe, cfg: dict, data: Data, device, group=None) -> State:
    t = cfg["train"]
    model, rel = recipe.build_networks(cfg, data.space)
    prior = recipe.build_prior(cfg, data.space)
    model, rel, prior = model.to(device), rel.to(device), prior.to(device)
    if t["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    if t["compile"]:
        for module in (model.encoder, model.decoder, model.discriminator, rel):
            module.compile()  # in place: state_dict keys and checkpoints stay the same
    group = group or distributed.Group()
    group.broadcast_parameters([model, rel, prior])
    rel_groups = [{"params": list(rel.parameters())}]
    if cfg["prior"]["learn_means"]:
        rel_groups.append({"params": [prior.means], "lr": cfg["prior"]["means_lr"]})
    return State(
        recipe=recipe,
        model=model,
        rel=rel,
        prior=prior,
        ae_opt=torch.optim.Adam(model.autoencoder_parameters(), lr=t["lr"]),
        disc_opt=torch.optim.Adam(model.discriminator.parameters(), lr=t["disc_lr"],
                                  betas=(0.5, 0.999)),
        rel_opt=torch.optim.Adam(rel_groups, lr=t["rel_lr"]),
        table=torch.as_tensor(data.space.table, device=device),
        group=group,
        device=torch.device(device),
        amp=t["amp"] == "bf16"
        or (t["amp"] == "auto" and runtime.native_bf16(torch.device(device))),
    )


# --------------------------------------------------------------------------------------------
# The three phases


def fast(state, module, *inputs):
    """A training forward pass: bf16 autocast when train.amp is on, fp32 out for the losses."""
    with torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=state.amp):
        return module(*inputs).float()


def adversarial_autoencoder_step(state, cfg, images, inputs, slots, real, real_slots, n_recon,
                                 supervised=None):
    """One reconstruction + discriminator + encoder update; returns the losses (tensors).

    images/inputs: clean and augmented images (N, C, 64, 64), this rank's share; the first
    n_recon are reconstructed. slots (N,): discriminator slot of each code (entity or K =
    unlabelled); real (M, D) prior samples with real_slots (M,). supervised: optional
    f(codes of images[n_recon:]) -> an extra encoder loss. Returns the losses and the codes of
    images[n_recon:] (detached).
    """
    model, group = state.model, state.group
    z = fast(state, model.encoder, inputs)
    recon = state.recipe.reconstruction(fast(state, model.decoder, z[:n_recon]),
                                        images[:n_recon])

    d_loss = losses.discriminator(fast(state, model.discriminator, real, real_slots),
                                  fast(state, model.discriminator, z.detach(), slots))
    state.disc_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    group.average_gradients(model.discriminator.parameters())
    state.disc_opt.step()

    g_loss = losses.generator(fast(state, model.discriminator, z, slots))
    total = recon + cfg["train"]["adv_weight"] * g_loss
    out = {"recon": recon, "disc": d_loss, "gen": g_loss}
    if supervised is not None:
        out["sup"] = supervised(z[n_recon:])
        total = total + cfg["train"]["sup_weight"] * out["sup"]
    state.ae_opt.zero_grad(set_to_none=True)
    total.backward()
    group.average_gradients(model.autoencoder_parameters())
    state.ae_opt.step()
    return out, z[n_recon:].detach()


def warmup_step(state, data, idx, cfg):
    """Phase 1: plain adversarial autoencoder against the simple prior; no labels."""
    shard = state.group.shard  # randomness is drawn for the global batch, then split by rank
    x = data.batch("train", idx)
    x_in = state.recipe.augment(x, cfg)
    real = state.recipe.warmup_prior(cfg, len(x), x.device)
    x, x_in, real = shard(x), shard(x_in), shard(real)
    unlabelled = torch.full((len(x),), data.space.num_entities, device=x.device)
    out, _ = adversarial_autoencoder_step(state, cfg, x, x_in, unlabelled, real, unlabelled,
                                          n_recon=len(x))
    return out


@torch.no_grad()
def init_adaptive_prior(state, data, cfg):
    """Phase 2: one component per entity, fitted to the encoded labelled images."""
    state.model.eval()
    idx = data.labelled
    z = torch.cat([state.model.encoder(data.batch("train", part)) for part in idx.split(1024)])
    state.prior.fit(z, data.entities["train"][idx], cfg["prior"]["gm_cov"],
                    cfg["prior"]["pooling"])
    state.model.train()


def relational_step(state, data, idx, cfg):
    """Phase 3: labelled codes to their own component, the rest to the mixture; then ReL."""
    t, space, prior, shard = cfg["train"], data.space, state.prior, state.group.shard
    augment = state.recipe.augment
    x = data.batch("train", idx)
    pick = torch.randint(0, len(data.labelled), (t["labelled_batch_size"],), device=x.device)
    labelled = data.labelled[pick]
    x_lab, y_lab = data.batch("train", labelled), data.entities["train"][labelled]
    x_in = augment(x, cfg)
    x_lab_in = augment(mirror(x_lab, cfg["data"]["labelled_mirror_prob"]), cfg)
    with torch.no_grad():
        z_mix, _ = prior.sample_uniform(len(x))
        z_own = prior.sample(y_lab)
    x, x_in, z_mix = shard(x), shard(x_in), shard(z_mix)
    x_lab, x_lab_in, y_lab, z_own = shard(x_lab), shard(x_lab_in), shard(y_lab), shard(z_own)

    unlabelled = torch.full((len(x),), space.num_entities, device=x.device)
    out, z_lab = adversarial_autoencoder_step(
        state, cfg,
        images=torch.cat([x, x_lab]), inputs=torch.cat([x_in, x_lab_in]),
        slots=torch.cat([unlabelled, y_lab]),
        real=torch.cat([z_mix, z_own]), real_slots=torch.cat([unlabelled, y_lab]),
        n_recon=len(x),
        supervised=(lambda z_lab: losses.supervised(z_lab, y_lab, prior.means.detach(),
                                                    prior.chol, t["sup_loss"]))
        if t["sup_weight"] > 0 else None,
    )
    codes = (z_lab, y_lab) if t["rel_codes"] else None
    for _ in range(t["rel_steps"]):
        out["rel"] = rel_step(state, space, cfg, codes)
    return out


def rel_step(state, space, cfg, codes=None):
    """ReL on prior samples: source from entity e, relation r, target component r(e).

    codes: optional (z, entities) of encoded labelled images (this rank's share), moved by
    every relation as well, so ReL also learns the codes the encoder really produces, which
    need not sit inside their components (train.rel_codes).
    """
    t, prior, group = cfg["train"], state.prior, state.group
    device = prior.means.device
    source = torch.randint(0, space.num_entities, (t["rel_batch_size"],), device=device)
    relation = torch.randint(0, len(space.relation_names), (t["rel_batch_size"],), device=device)
    target = state.table[relation, source]
    eps = torch.randn(2, t["rel_batch_size"], prior.means.shape[1], device=device)
    if t["rel_noise"] == "matched":  # the target sample sits where the source sits in its own
        eps[1] = eps[0]  # component, so ReL learns to keep the within-entity position (nuisances)
    source, relation, target, eps = (group.shard(v) for v in (source, relation, target,
                                                              eps.transpose(0, 1)))
    z, target_eps = prior.sample(source, eps[:, 0]), eps[:, 1]
    if codes is not None:
        z_codes, entities = codes
        n_rel = len(space.relation_names)
        code_relation = torch.arange(n_rel, device=device).repeat_interleave(len(z_codes))
        code_target = state.table[code_relation, entities.repeat(n_rel)]
        z_codes_all = z_codes.repeat(n_rel, 1)  # every code under every relation
        code_eps = (prior.whiten(z_codes, entities).repeat(n_rel, 1)
                    if t["rel_noise"] == "matched" else torch.randn_like(z_codes_all))
        z = torch.cat([z, z_codes_all])
        relation, target = torch.cat([relation, code_relation]), torch.cat([target, code_target])
        target_eps = torch.cat([target_eps, code_eps])
    moved = fast(state, state.rel, z, relation)
    rel_loss = losses.relational(moved, prior.sample(target, target_eps), target, prior.means,
                                 prior.chol, t["rel_loss"])
    total = rel_loss
    if cfg["prior"]["learn_means"]:
        total = total + losses.separation(prior.means, prior.chol, cfg["prior"]["min_separation"])
    state.rel_opt.zero_grad(set_to_none=True)
    total.backward()
    group.average_gradients([p for g in state.rel_opt.param_groups for p in g["params"]])
    state.rel_opt.step()
    return rel_loss


def decay_start(t: dict) -> int | None:
    """The epoch where the learning rates start to fall: train.lr_decay_epochs before the end
    (the whole relational phase if it is shorter); None when they stay constant."""
    decay = min(t["lr_decay_epochs"], t["relational_epochs"])
    return t["warmup_epochs"] + t["relational_epochs"] - decay if decay else None


def lr_factor(cfg, epoch: float) -> float:
    """Learning-rate multiplier at a (fractional) epoch: 1, then from decay_start straight down
    towards 0 at the end."""
    t = cfg["train"]
    start, end = decay_start(t), t["warmup_epochs"] + t["relational_epochs"]
    if start is None or epoch < start:
        return 1.0
    return max(end - epoch, 0.0) / (end - start)


def set_lr(state, factor: float) -> None:
    """Every optimiser's learning rates to factor x their configured values."""
    for opt in (state.ae_opt, state.disc_opt, state.rel_opt):
        for group in opt.param_groups:
            group["lr"] = factor * group.setdefault("base_lr", group["lr"])


def train_epoch(state, data, cfg, phase: str) -> dict:
    """One pass over the training images in the given phase; mean losses."""
    step = warmup_step if phase == "warmup" else relational_step
    state.model.train()
    sums = {}
    order = batches(len(data.images["train"]), cfg["train"]["batch_size"],
                    data.images["train"].device)
    bar = tqdm(order, desc=f"epoch {state.epoch + 1} {phase}", leave=False, file=sys.stderr,
               dynamic_ncols=True, disable=not sys.stderr.isatty())
    for i, idx in enumerate(bar):
        set_lr(state, lr_factor(cfg, state.epoch + i / len(order)))
        step_losses = {k: v.item() for k, v in state.group.mean(step(state, data, idx, cfg)).items()}
        for name, value in step_losses.items():
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"{name} loss became {value} at epoch {state.epoch + 1}, step {i + 1}"
                )
            sums[name] = sums.get(name, 0.0) + value
        bar.set_postfix({k: f"{v:.3g}" for k, v in step_losses.items()}, refresh=False)
    return {f"train/{k}": v / max(len(order), 1) for k, v in sums.items()}


CSV_KEYS = ("val/recon_loss", "val/cluster_acc@0.99", "val/cluster_accept@0.99",
            "val/rel_acc_latent", "val/rel_acc_data", "val/min_separation")


def csv_row(state, phase, train_losses, val) -> dict:
    row = {"epoch": state.epoch, "phase": phase, "wall_s": round(state.elapsed_s, 2)}
    for name in ("recon", "disc", "gen", "sup", "rel"):
        row[f"train/{name}"] = train_losses.get(f"train/{name}")
    row.update({k: val.get(k) for k in CSV_KEYS})
    return row


# --------------------------------------------------------------------------------------------
# Checkpoints: the networks, optimisers, random state and the config that made them


def save(state, run: RunFolder, cfg) -> None:
    save_checkpoint({
        "format": 1,
        "dataset": state.recipe.name,
        "epoch": state.epoch,
        "phase": phase_of(state.epoch, cfg),  # of the next epoch; informative, epoch decides
        "elapsed_s": state.elapsed_s,
        "model": state.model.state_dict(),
        "rel": state.rel.state_dict(),
        "prior": state.prior.state_dict(),
        "ae_opt": state.ae_opt.state_dict(),
        "disc_opt": state.disc_opt.state_dict(),
        "rel_opt": state.rel_opt.state_dict(),
        "rng": runtime.rng_state(),
        "config": cfg,
    }, run.checkpoint)


def restore(state, run: RunFolder, device) -> None:
    ckpt = load_checkpoint(run.checkpoint, map_location=device)
    if ckpt.get("dataset", state.recipe.name) != state.recipe.name:
        raise UserError(f"{run.checkpoint} is a {ckpt['dataset']} run; use "
                        f"{ckpt['dataset']}/train.py to resume or evaluate it")
    state.model.load_state_dict(ckpt["model"])
    state.rel.load_state_dict(ckpt["rel"])
    state.prior.load_state_dict(ckpt["prior"])
    state.ae_opt.load_state_dict(ckpt["ae_opt"])
    state.disc_opt.load_state_dict(ckpt["disc_opt"])
    state.rel_opt.load_state_dict(ckpt["rel_opt"])
    runtime.set_rng_state({k: v.cpu() if torch.is_tensor(v) else [s.cpu() for s in v]
                           for k, v in ckpt["rng"].items()})
    state.epoch, state.elapsed_s = ckpt["epoch"], ckpt["elapsed_s"]


# --------------------------------------------------------------------------------------------
# Runs


def phase_of(epoch: int, cfg) -> str:
    return "warmup" if epoch < cfg["train"]["warmup_epochs"] else "relational"


def train(state, data, cfg, run: RunFolder) -> None:
    t = cfg["train"]
    total = t["warmup_epochs"] + t["relational_epochs"]
    while state.epoch < total:
        phase = phase_of(state.epoch, cfg)
        start = time.perf_counter()
        if phase == "relational" and not bool(state.prior.fitted):
            init_adaptive_prior(state, data, cfg)
        train_losses = train_epoch(state, data, cfg, phase)
        state.epoch += 1
        state.elapsed_s += time.perf_counter() - start
        if not state.group.is_main:  # rank 0 alone evaluates and writes
            continue
        last = state.epoch == total
        val = {}
        if phase == "relational" and (state.epoch % cfg["run"]["eval_every"] == 0 or last):
            val = evaluation.evaluate(state, data, cfg, "val")
        run.append_metrics(csv_row(state, phase, train_losses, val))
        save(state, run, cfg)
        tqdm.write(_progress_line(state, total, phase, train_losses, val), file=sys.stderr)
    if not bool(state.prior.fitted):  # relational_epochs=0: still fit the mixture to evaluate
        init_adaptive_prior(state, data, cfg)


def _progress_line(state, total, phase, train_losses, val) -> str:
    parts = [f"epoch {state.epoch}/{total} {phase}", f"{state.elapsed_s:.0f}s"]
    parts += [f"{k.split('/')[1]} {v:.3g}" for k, v in train_losses.items()]
    if val:
        parts += [f"val acc@0.99 {val['val/cluster_acc@0.99']:.3f}",
                  f"accept {val['val/cluster_accept@0.99']:.3f}",
                  f"rel(lat/data) {val['val/rel_acc_latent']:.3f}/{val['val/rel_acc_data']:.3f}"]
    return " | ".join(parts)


def finish(state, data, cfg, run: RunFolder) -> dict:
    """Every final metric (metrics.json), every picture, and report.md."""
    results = evaluation.final_metrics(state, data, cfg, REPO)
    results["wall_time_s"] = state.elapsed_s
    results["epochs"] = state.epoch
    results["labelled_images"] = len(data.labelled)
    results["train_images"] = len(data.images["train"])
    run.write_final_metrics(results)
    state.recipe.write_pictures(run, state, data, cfg, results)
    report.write(run, state.recipe.name, cfg, results)
    return results


# --------------------------------------------------------------------------------------------
# The command line


def resolve_config(recipe: Recipe, args) -> dict:
    cfg = configlib.apply_overrides(recipe.config,
                                    [f"{k}={v}" for k, v in _preset(recipe, args.preset).items()])
    cfg = configlib.apply_overrides(cfg, args.overrides)
    recipe.validate(cfg)
    return cfg


def _preset(recipe, name):
    if name is None:
        return {}
    if name not in recipe.presets:
        raise UserError(f"unknown preset '{name}'; choose from {sorted(recipe.presets)}")
    return {k: (v if isinstance(v, str) else json.dumps(v))
            for k, v in recipe.presets[name].items()}


def load_run_config(recipe: Recipe, run: RunFolder) -> dict:
    cfg = configlib.upgrade(run.config())
    configlib.check_types(cfg, recipe.config)
    recipe.validate(cfg)
    return cfg


def setup(recipe: Recipe, cfg):
    """Threads, seed, process group, device and data: (group, device, data)."""
    if cfg["run"]["threads"] > 0:
        torch.set_num_threads(cfg["run"]["threads"])
    runtime.seed_everything(cfg["run"]["seed"])
    group, device_name = distributed.init(cfg["run"]["device"])
    distributed.check_divisible(cfg["train"], group.world)
    device = runtime.pick_device(device_name)
    return group, device, recipe.load_data(cfg, device, REPO)


def main(recipe: Recipe, argv=None) -> int:
    args = parse_args(recipe, argv)
    if args.evaluate:
        run = RunFolder.open(args.evaluate)
        cfg = load_run_config(recipe, run)
        _, device, data = setup(recipe, cfg)
        state = build_state(recipe, cfg, data, device)
        restore(state, run, device)
        print_summary(finish(state, data, cfg, run))
        return _done(run)

    if args.resume:
        run = RunFolder.open(args.resume)
        cfg = load_run_config(recipe, run)
    else:
        cfg = resolve_config(recipe, args)
    group, device, data = setup(recipe, cfg)  # data problems surface before any run folder
    state = build_state(recipe, cfg, data, device, group)
    if args.resume:
        if run.checkpoint.exists():
            restore(state, run, device)
        if group.is_main:
            run.remove_stale_temporaries()
            run.keep_metrics_through(state.epoch)
    elif group.is_main:
        root = Path(cfg["run"]["root"])
        run = RunFolder.create(root if root.is_absolute() else REPO / root, recipe.name,
                               cfg["run"]["name"], cfg)
    else:
        run = None
    if group.is_main:
        print(f"run folder: {run.path}", file=sys.stderr)
        print(f"training forward passes in {'bf16 autocast' if state.amp else 'fp32'} "
              f"(train.amp={cfg['train']['amp']})", file=sys.stderr)
    train(state, data, cfg, run)
    if not group.is_main:
        group.barrier()
        return 0
    print_summary(finish(state, data, cfg, run))
    group.barrier()
    return _done(run)


def print_summary(results: dict) -> None:
    keys = ["test/cluster_acc@0.99", "test/cluster_accept@0.99", "test/rel_acc_latent",
            "test/rel_accept_latent", "test/rel_acc_data", "test/rel_acc_decoded",
            "test/recon_loss", "wall_time_s"]
    print("  ".join(f"{k}={results[k]:.4g}" for k in keys if k in results))


def _done(run) -> int:
    print(run.path)
    return 0


def parse_args(recipe: Recipe, argv):
    parser = argparse.ArgumentParser(
        prog=f"{recipe.name}/train.py",
        description=f"Weak disentanglement on {recipe.name}.",
        epilog="Overrides are dotted config keys, e.g. train.relational_epochs=40 model.z_dim=8",
    )
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--preset", choices=sorted(recipe.presets),
                        help="a named set of overrides")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run")
    action.add_argument("--evaluate", metavar="RUN_DIR",
                        help="recompute every metric, picture and report.md of a run")
    args = parser.parse_args(argv)
    if (args.resume or args.evaluate) and (args.overrides or args.preset):
        parser.error("--resume/--evaluate use the run's saved config.json; drop the overrides")
    return args


def cli(recipe: Recipe) -> int:
    """Run main with the exit codes the README promises: 0 done, 1 diverged or disk trouble
    (the last checkpoint is intact), 2 bad input, 130 interrupted."""
    try:
        code = main(recipe)
        distributed.shutdown()
        return code
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}; the last good checkpoint is kept", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. disk full: atomic writes leave the last checkpoint whole
        print(f"error: {err.strerror or err} while writing {err.filename or 'the run folder'}; "
              "the last checkpoint is intact: free space, then continue with --resume RUN_DIR",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130
