"""Weak disentanglement on dSprites: train, resume or re-evaluate a run.

    python dsprites/train.py [key=value ...]      # new run; overrides as in config.py
    python dsprites/train.py --preset paper       # paper-scale preset (GPU)
    python dsprites/train.py --resume RUN_DIR     # continue a stopped run
    python dsprites/train.py --evaluate RUN_DIR   # recompute metrics, pictures and report.md

Read top to bottom: what a run holds, the three phases of the method as named functions, one
epoch, evaluation, checkpoints, the run, and main. The last line printed is the run folder.

1. warm-up (warmup_step): a plain adversarial autoencoder against a simple prior; no labels;
2. adaptive prior init (init_adaptive_prior): one Gaussian component per entity, fitted to
   the encoded labelled set;
3. relational phase (relational_step): reconstruction and the label-conditioned adversarial
   game against the mixture, then rel_step: ReL's own updates, on prior samples; its last
   prior.calibrate_epochs epochs begin with calibrate_prior: the covariances fitted to where
   the encoder puts the training images.
"""

import functools
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from tqdm import tqdm

from common import cli, distributed, evaluation, gmm, graph, report, runtime
from common import config as configlib
from common.augment import mirror, recolour_background, shift
from common.board import Board
from common.checkpoint import load_checkpoint, save_checkpoint
from common.data import Data, batches, resolve_paths
from common.errors import Preempted, TrainingDiverged, UserError
from common.runlog import METRICS_PARTIAL, RunFolder
from common.schedule import lr_factor
from dsprites import config, dataset, log, loss
from dsprites import model as networks
from dsprites import prior as priors

DATASET = Path(__file__).resolve().parent.name  # run folders are <DATASET>-<timestamp>
REPO = Path(__file__).resolve().parents[1]


@dataclass
class State:
    """Everything that changes during training (and goes into a checkpoint)."""

    model: networks.AbsAE
    rel: networks.ReL
    prior: priors.MixturePrior
    ae_opt: torch.optim.Optimizer
    disc_opt: torch.optim.Optimizer
    rel_opt: torch.optim.Optimizer
    table: torch.Tensor  # (R, K) relation targets
    group: distributed.Group  # this process's place among torchrun's (rank 0 of 1 alone)
    device: torch.device
    amp: bool  # bf16 autocast in training forward passes
    epoch: int = 0  # epochs completed
    elapsed_s: float = 0.0  # training wall time over all sessions of this run
    # the epoch in progress, when a checkpoint is written inside it (train.checkpoint_every_s
    # or a stop signal): its batch order (flat), steps completed and loss sums so far
    order: torch.Tensor | None = None
    step: int = 0
    sums: dict = field(default_factory=dict)
    clock: float = 0.0  # perf_counter() since which training time is counted (not saved)
    # the block adversary and its optimiser (train.leak_weight > 0, the modular kind; or None)
    adversary: networks.BlockAdversary | None = None
    leak_opt: torch.optim.Optimizer | None = None
    # the block critic and its optimiser (train.indep_weight > 0, the modular kind; or None)
    critic: networks.BlockCritic | None = None
    critic_opt: torch.optim.Optimizer | None = None
    # this epoch's pseudo-labelled training images (train.pseudo_per_entity): their positions
    # (P,) and the entities the mixture gave them (P,); None: the labelled images alone
    pseudo: tuple | None = None


def build_state(cfg: dict, data: Data, device, group=None) -> State:
    prior = priors.build(cfg, data.space)
    model, rel = networks.build(cfg, data.space, prior.relation_changes(data.space))
    model, rel, prior = model.to(device), rel.to(device), prior.to(device)
    if cfg["train"]["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    group = group or distributed.Group()
    model = group.synchronise_batch_norm(model, torch.device(device))
    if cfg["train"]["compile"] != "off":
        for module in (model.encoder, model.decoder, model.discriminator, rel):
            # in place: state_dict keys and checkpoints stay the same
            module.compile(mode=cfg["train"]["compile"])
    group.broadcast_parameters([model, rel, prior])
    adversary = leak_opt = None
    # the entity kind's code is one block that holds every entity factor: nothing to keep out
    if cfg["train"]["leak_weight"] > 0 and cfg["prior"]["kind"] == "modular":
        adversary = networks.BlockAdversary(prior.block_dims, data.space.bin_counts,
                                            cfg["model"]["disc_hidden"] // 4).to(device)
        group.broadcast_parameters([adversary])
        leak_opt = torch.optim.Adam(adversary.parameters(), lr=cfg["train"]["disc_lr"],
                                    betas=(0.5, 0.999))
    critic = critic_opt = None
    if cfg["train"]["indep_weight"] > 0 and cfg["prior"]["kind"] == "modular":
        critic = networks.BlockCritic(cfg["model"]["z_dim"], cfg["model"]["disc_hidden"] // 2)
        critic = critic.to(device)
        group.broadcast_parameters([critic])
        critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg["train"]["disc_lr"],
                                      betas=(0.5, 0.9))
    rel_groups = [{"params": list(rel.parameters())}]
    if cfg["prior"]["learn_means"]:
        rel_groups.append({"params": list(prior.parameters()), "lr": cfg["prior"]["means_lr"]})
    return State(
        model=model,
        rel=rel,
        prior=prior,
        ae_opt=torch.optim.Adam(model.autoencoder_parameters(), lr=cfg["train"]["lr"]),
        disc_opt=torch.optim.Adam(model.discriminator.parameters(), lr=cfg["train"]["disc_lr"],
                                  betas=(0.5, 0.999)),
        rel_opt=torch.optim.Adam(rel_groups, lr=cfg["train"]["rel_lr"]),
        table=torch.as_tensor(data.space.table, device=device),
        group=group,
        device=torch.device(device),
        amp=runtime.bf16_autocast(cfg["train"]["amp"], torch.device(device)),
        adversary=adversary,
        leak_opt=leak_opt,
        critic=critic,
        critic_opt=critic_opt,
    )


# --------------------------------------------------------------------------------------------
# The three phases


def train_forward(state, module, *inputs):
    """A training forward pass: bf16 autocast when train.amp is on, fp32 out for the losses."""
    with torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=state.amp):
        return module(*inputs).float()


def adversarial_autoencoder_step(state, cfg, images, inputs, slots, real, real_slots, n_recon,
                                 terms=()):
    """One reconstruction + discriminator + encoder update; returns the losses (tensors).

    images/inputs: clean and augmented images (N, C, 64, 64), this rank's share; the first
    n_recon are reconstructed. slots (N,): discriminator slot of each code (entity or K =
    unlabelled); real (M, D) prior samples with real_slots (M,). terms: the encoder's other
    losses, (name, weight, f(codes of every image) -> loss) each, added in that order.
    Returns the losses and the codes of images[n_recon:] (detached).
    """
    model, group = state.model, state.group
    z = train_forward(state, model.encoder, inputs)
    recon = loss.reconstruction(train_forward(state, model.decoder, z[:n_recon]),
                                images[:n_recon], cfg["train"]["recon_object_weight"])

    d_loss = loss.discriminator(train_forward(state, model.discriminator, real, real_slots),
                                train_forward(state, model.discriminator, z.detach(), slots))
    state.disc_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    group.average_gradients(model.discriminator.parameters())
    state.disc_opt.step()

    g_loss = loss.generator(train_forward(state, model.discriminator, z, slots))
    total = recon + cfg["train"]["adv_weight"] * g_loss
    out = {"recon": recon, "disc": d_loss, "gen": g_loss}
    for name, weight, term in terms:
        out[name] = term(z)
        total = total + weight * out[name]
    state.ae_opt.zero_grad(set_to_none=True)
    total.backward()
    group.average_gradients(model.autoencoder_parameters())
    state.ae_opt.step()
    return out, z[n_recon:].detach()


def warmup_step(state, data, idx, cfg):
    """Phase 1, one training step: plain adversarial autoencoder against the simple prior."""
    shard = state.group.shard  # randomness is drawn for the global batch, then split by rank
    x = data.batch("train", idx)
    x_in = dataset.augment(x, cfg)
    real = priors.warmup_sample(cfg, len(x), x.device)
    x, x_in, real = shard(x), shard(x_in), shard(real)
    unlabelled = torch.full((len(x),), data.space.num_entities, device=x.device)
    out, _ = adversarial_autoencoder_step(state, cfg, x, x_in, unlabelled, real, unlabelled,
                                          n_recon=len(x))
    return out


@torch.no_grad()
def init_adaptive_prior(state, data, cfg, keep_means: bool = False):
    """Phase 2: one component per entity, fitted to the encoded labelled images; with
    keep_means, the covariances alone are fitted again to where the encoder now puts the
    labelled images (prior.refit_every), at their own spread (not prior.gm_cov times it:
    the codes follow the prior, so a scale below 1 would shrink it at every refit), the
    learnt means kept."""
    state.model.eval()
    idx = data.labelled
    scale = 1.0 if keep_means else cfg["prior"]["gm_cov"]
    state.prior.fit(encode_train(state, data, idx), data.entities["train"][idx], scale,
                    cfg["prior"]["pooling"], keep_means=keep_means)
    state.model.train()


# EM rounds of a calibration: each assigns the unlabelled codes under the covariances the
# last one fitted (the first, under the training's thin ones); a third changes little
CALIBRATION_ROUNDS = 3


@torch.no_grad()
def calibrate_prior(state, data, cfg):
    """The components' covariances fitted to where the encoder puts the training images, about
    the learnt means (prior.calibrate_epochs): the labelled images count for their entity, up
    to prior.calibrate_images others for their most likely component (hard EM), so the
    components describe the codes of every image and not only the few labelled ones."""
    state.model.eval()
    labelled = encode_train(state, data, data.labelled)
    others = encode_train(state, data, unlabelled_sample(data, cfg["prior"]["calibrate_images"],
                                                         seed=cfg["run"]["seed"] + state.epoch))
    z = torch.cat([labelled, others])
    for _ in range(CALIBRATION_ROUNDS):
        assigned = state.prior.classify(others, 1.0)[0]
        state.prior.calibrate(z, torch.cat([data.entities["train"][data.labelled], assigned]))
    state.model.train()


def encode_train(state, data, idx, amp: bool = False) -> torch.Tensor:
    """(n, D) codes of the training images at positions idx (n,), in chunks; in bf16 autocast
    with amp (a reading that picks neighbours, not one that fits covariances), fp32 out."""
    with torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=amp):
        return torch.cat([state.model.encoder(data.batch("train", part)).float()
                          for part in idx.split(1024)])


def unlabelled_sample(data, n: int, seed: int) -> torch.Tensor:
    """Positions of up to n training images outside the labelled set, drawn with their own
    seed (the training's random stream is untouched)."""
    free = torch.ones(len(data.images["train"]), dtype=torch.bool)
    free[data.labelled.cpu()] = False
    positions = torch.nonzero(free).squeeze(1)
    order = torch.randperm(len(positions), generator=torch.Generator().manual_seed(seed))
    return positions[order[:n]].sort().values.to(data.labelled.device)


def labelled_pool(state, data) -> tuple:
    """The images the supervised term draws from, with their entities: the labelled ones, and
    this epoch's pseudo-labelled ones where train.pseudo_per_entity is on."""
    pool, entities = data.labelled, data.entities["train"][data.labelled]
    if state.pseudo is not None:
        pool = torch.cat([pool, state.pseudo[0]])
        entities = torch.cat([entities, state.pseudo[1]])
    return pool, entities


@torch.no_grad()
def pseudo_label(state, data, cfg) -> tuple:
    """Self-training (train.pseudo_per_entity = k): of prior.calibrate_images unlabelled
    training images, the k surest of each entity, labelled with that entity for this epoch's
    supervised term. train.pseudo_source says who is sure: the mixture (inside the component's
    eval.q ellipsoid, most likely under it against any other: gmm.surest), or the labelled
    codes' entities spread over the nearest-neighbour graph of the codes (graph.spread,
    train.pseudo_neighbours; a modular prior's factor blocks each spread their bins over their
    own graph: prior.views), a reading that does not repeat the mixture's. No label beyond
    the budget is read; the pseudo-labels are made anew every epoch, so a wrong one is not
    kept once the codes say otherwise. (positions (P,), entities (P,))."""
    state.model.eval()
    # a sample of its own: the calibration of the same epoch draws with seed + epoch
    positions = unlabelled_sample(data, cfg["prior"]["calibrate_images"],
                                  seed=cfg["run"]["seed"] + 7919 * state.epoch)
    # in the training's precision: the graph and the mixture's surest codes need no more,
    # and the encoding of every training image is most of a pseudo-labelling's time
    z = encode_train(state, data, positions, amp=state.amp)
    if cfg["train"]["pseudo_source"] == "graph":
        labelled = encode_train(state, data, data.labelled, amp=state.amp)
        keep, entities = graph.spread(labelled, data.entities["train"][data.labelled], z,
                                      cfg["train"]["pseudo_neighbours"],
                                      cfg["train"]["pseudo_per_entity"], state.prior.views(),
                                      cfg["train"]["pseudo_alpha"])
    else:
        keep, entities = gmm.surest(z, state.prior.means, state.prior.chol, cfg["eval"]["q"],
                                    cfg["train"]["pseudo_per_entity"])
    state.model.train()
    return positions[keep], entities


def relational_step(state, data, idx, cfg):
    """Phase 3, one training step of the whole model: labelled codes to their own component,
    the rest to the mixture (adversarial_autoencoder_step); then train.rel_steps updates of
    ReL alone (rel_step)."""
    space, prior, shard = data.space, state.prior, state.group.shard
    x = data.batch("train", idx)
    pool, pool_entities = labelled_pool(state, data)
    pick = torch.randint(0, len(pool), (cfg["train"]["labelled_batch_size"],), device=x.device)
    x_lab, y_lab = data.batch("train", pool[pick]), pool_entities[pick]
    x_in = dataset.augment(x, cfg)
    x_lab_in = dataset.augment(move(x_lab, cfg), cfg)
    # the unlabelled pictures moved as the labelled ones are, for the terms that compare them
    compared = cfg["train"]["consistency_weight"] > 0 or cfg["train"]["invariance_weight"] > 0
    x_moved = dataset.augment(move(x, cfg), cfg) if compared else None
    with torch.no_grad():
        z_mix, _ = prior.sample_uniform(len(x))
        z_own = prior.sample(y_lab)
    x, x_in, z_mix = shard(x), shard(x_in), shard(z_mix)
    x_moved = shard(x_moved) if x_moved is not None else None
    x_lab, x_lab_in, y_lab, z_own = shard(x_lab), shard(x_lab_in), shard(y_lab), shard(z_own)

    # z: the codes of the step's pictures, the unlabelled ones (x) first, then the labelled
    def supervised(z):
        return loss.supervised(z[len(x):], y_lab, prior.means.detach(), prior.chol,
                               cfg["train"]["sup_loss"])

    @functools.cache
    def moved_codes():  # encoded once, for whichever terms read them
        with torch.no_grad():
            return train_forward(state, state.model.encoder, x_moved)

    def consistency(z):
        return loss.consistency(z[:len(x)], moved_codes(), prior.means.detach(), prior.chol)

    def invariance(z):  # the entity blocks: every dimension but the free block's
        target = moved_codes()
        return loss.block_invariance(z[:len(x)], target, prior.classify(target, 1.0)[0],
                                     prior.chol, prior.means.shape[1] - cfg["prior"]["free_dims"])

    def leak(z):  # the unlabelled pictures' bins as the mixture reads them, the labelled' own
        assigned = prior.classify(z[:len(x)].detach(), 1.0)[0]
        return leak_step(state, z, prior.entity_bins[torch.cat([assigned, y_lab])])

    def independence(z):  # the unlabelled pictures alone: a sample of the data, no label
        return independence_step(state, z[:len(x)], prior.block_dims)

    terms = [(name, cfg["train"][weight], term) for name, weight, term, wanted in (
        ("sup", "sup_weight", supervised, cfg["train"]["sup_weight"] > 0),
        ("cons", "consistency_weight", consistency, cfg["train"]["consistency_weight"] > 0),
        ("inv", "invariance_weight", invariance, cfg["train"]["invariance_weight"] > 0),
        ("leak", "leak_weight", leak, state.adversary is not None),
        ("indep", "indep_weight", independence, state.critic is not None),
    ) if wanted]
    unlabelled = torch.full((len(x),), space.num_entities, device=x.device)
    out, z_lab = adversarial_autoencoder_step(
        state, cfg,
        images=torch.cat([x, x_lab]), inputs=torch.cat([x_in, x_lab_in]),
        slots=torch.cat([unlabelled, y_lab]),
        real=torch.cat([z_mix, z_own]), real_slots=torch.cat([unlabelled, y_lab]),
        n_recon=len(x), terms=terms,
    )
    codes = (z_lab, y_lab) if cfg["train"]["rel_codes"] else None
    for _ in range(cfg["train"]["rel_steps"]):
        out["rel"] = rel_step(state, space, cfg, codes)
    return out


def move(x, cfg):
    """The pictures x mirrored, moved and given another picture's background as the config
    says (data.labelled_mirror_prob, data.labelled_shift, data.background_swap_prob): changes
    of nuisances alone, which keep the entity."""
    x = shift(mirror(x, cfg["data"]["labelled_mirror_prob"]), cfg["data"]["labelled_shift"])
    return recolour_background(x, cfg["data"]["background_swap_prob"])


def leak_step(state, z, bins):
    """One update of the block adversary on codes z (N, D) (detached) of pictures whose entity
    factors fall in bins (N, F); then the encoder's loss (loss.leak_confusion) on z. It reads
    the labelled budget's entity labels and the mixture's reading of the other pictures: no
    other labels."""
    guess = loss.leak_guess(state.adversary(z.detach()), state.adversary.others, bins)
    state.leak_opt.zero_grad(set_to_none=True)
    guess.backward()
    state.group.average_gradients(state.adversary.parameters())
    state.leak_opt.step()
    return loss.leak_confusion(state.adversary(z))


def independence_step(state, z, block_dims):
    """One update of the block critic on codes z (N, D) (detached) against the same codes with
    their blocks shuffled across the batch; then the encoder's loss (loss.dependence) on z.
    It reads no label."""
    shuffled = loss.shuffle_blocks(z.detach(), block_dims)
    # the latent discriminator's logistic loss: the codes as they are -> 1, shuffled -> 0
    critic_loss = loss.discriminator(state.critic(z.detach()), state.critic(shuffled))
    state.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    state.group.average_gradients(state.critic.parameters())
    state.critic_opt.step()
    return loss.dependence(state.critic(z))


def rel_step(state, space, cfg, codes=None):
    """Phase 3, one update of ReL alone (and of the adaptive means): prior samples of a source
    entity e moved by a relation r towards component r(e).

    codes: optional (z, entities) of encoded labelled images (this rank's share), moved by
    every relation as well, so ReL also learns the codes the encoder really produces, which
    need not sit inside their components (train.rel_codes).
    """
    prior, group, batch = state.prior, state.group, cfg["train"]["rel_batch_size"]
    matched = cfg["train"]["rel_noise"] == "matched"
    device = prior.means.device
    source = torch.randint(0, space.num_entities, (batch,), device=device)
    relation = torch.randint(0, len(space.relation_names), (batch,), device=device)
    target = state.table[relation, source]
    eps = torch.randn(2, batch, prior.means.shape[1], device=device)
    if matched:  # the target sample sits where the source sits in its own component, so
        eps[1] = eps[0]  # ReL learns to keep the within-entity position (the nuisances)
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
                    if matched else torch.randn_like(z_codes_all))
        z = torch.cat([z, z_codes_all])
        relation, target = torch.cat([relation, code_relation]), torch.cat([target, code_target])
        target_eps = torch.cat([target_eps, code_eps])
    moved = train_forward(state, state.rel, z, relation)
    rel_loss = loss.relational(moved, prior.sample(target, target_eps), target, prior.means,
                               prior.chol, cfg["train"]["rel_loss"])
    total = rel_loss
    if cfg["prior"]["learn_means"]:
        total = total + loss.separation(prior.means, prior.chol, cfg["prior"]["min_separation"])
    state.rel_opt.zero_grad(set_to_none=True)
    total.backward()
    group.average_gradients([p for g in state.rel_opt.param_groups for p in g["params"]])
    state.rel_opt.step()
    return rel_loss


# --------------------------------------------------------------------------------------------
# One epoch


def set_lr(state, factor: float) -> None:
    """Every optimiser's learning rates to factor x their configured values."""
    for opt in (state.ae_opt, state.disc_opt, state.rel_opt):
        for group in opt.param_groups:
            group["lr"] = factor * group.setdefault("base_lr", group["lr"])


def count_time(state) -> None:
    """Add the wall time since state.clock to state.elapsed_s (training only: validation and
    checkpoints are not counted)."""
    now = time.perf_counter()
    state.elapsed_s += now - state.clock
    state.clock = now


# Step losses stay on the device and are read back CHECK_EVERY steps at a time: reading each
# loss every step (.item()) makes the host wait for the GPU's queue to drain, every step.
CHECK_EVERY = 25


def add_losses(state, window: list[dict], first_step: int) -> dict:
    """Read a window of steps' losses back in one transfer, stop at the first non-finite one
    (naming its loss, epoch and step), and add them to state.sums in order; the last step's
    losses (for the progress bar)."""
    names = list(window[0])
    rows = torch.stack([torch.stack([losses[k] for k in names]) for losses in window]).tolist()
    for offset, row in enumerate(rows):
        for name, value in zip(names, row):
            if not math.isfinite(value):
                raise TrainingDiverged(f"{name} loss became {value} at epoch "
                                       f"{state.epoch + 1}, step {first_step + offset + 1}")
            state.sums[name] = state.sums.get(name, 0.0) + value
    window.clear()
    return dict(zip(names, rows[-1]))


def train_epoch(state, data, cfg, phase: str, run: RunFolder | None = None,
                signals: cli.StopSignals | None = None) -> dict:
    """One pass over the training images in the given phase (from state.step on when a
    checkpoint stopped inside it); mean losses. Rank 0 (the one with a run folder) writes a
    checkpoint inside the epoch every train.checkpoint_every_s seconds, and at the step
    boundary after a stop signal, after which every rank raises Preempted. Losses are checked
    finite before any checkpoint, so none holds a diverged model."""
    step = warmup_step if phase == "warmup" else relational_step
    state.model.train()
    if state.order is None:  # a new epoch
        state.order = torch.cat(batches(len(data.images["train"]), cfg["train"]["batch_size"],
                                        data.images["train"].device))
        state.step, state.sums = 0, {}
    order = state.order.split(cfg["train"]["batch_size"])
    every, saved = cfg["train"]["checkpoint_every_s"], time.perf_counter()
    window = []  # the unread steps' losses, state.step - len(window) onwards
    bar = tqdm(range(state.step, len(order)), initial=state.step, total=len(order),
               desc=f"epoch {state.epoch + 1} {phase}", leave=False, file=sys.stderr,
               dynamic_ncols=True, disable=not sys.stderr.isatty())
    for i in bar:
        set_lr(state, lr_factor(cfg["train"], state.epoch + i / len(order)))
        losses = state.group.mean(step(state, data, order[i], cfg))
        window.append({k: v.detach().float() for k, v in losses.items()})
        state.step = i + 1
        stop, due = state.group.any([signals is not None and signals.received is not None,
                                     every > 0 and time.perf_counter() - saved >= every],
                                    state.device)
        if stop or due or len(window) == CHECK_EVERY or state.step == len(order):
            last = add_losses(state, window, state.step - len(window))
            bar.set_postfix({k: f"{v:.3g}" for k, v in last.items()}, refresh=False)
        if (stop or due) and run is not None:
            count_time(state)
            save(state, run, cfg)
            state.clock = saved = time.perf_counter()
        if stop:
            where = f"epoch {state.epoch + 1}, step {state.step} of {len(order)}"
            raise Preempted(f"{signals.received or 'a stop signal'} at {where}: checkpoint "
                            f"written; continue with --resume {run.path if run else 'RUN_DIR'}")
    losses = {f"train/{k}": v / max(len(order), 1) for k, v in state.sums.items()}
    state.order, state.step, state.sums = None, 0, {}
    return losses


CSV_KEYS = ("val/recon_loss", "val/cluster_acc@0.99", "val/cluster_accept@0.99",
            "val/rel_acc_latent", "val/rel_acc_data", "val/min_separation")


def csv_row(state, phase, train_losses, val) -> dict:
    row = {"epoch": state.epoch, "phase": phase, "wall_s": round(state.elapsed_s, 2)}
    for name in ("recon", "disc", "gen", "sup", "cons", "inv", "leak", "indep", "rel"):
        row[f"train/{name}"] = train_losses.get(f"train/{name}")
    row.update({k: val.get(k) for k in CSV_KEYS})
    return row


# --------------------------------------------------------------------------------------------
# Evaluation (the measurements themselves are common/evaluation.py's)


@torch.no_grad()
def evaluate(state, data, cfg, split: str, z=None) -> dict:
    """Reconstruction, clustering and relation metrics in latent space on one split (z: its
    codes, when the caller has them)."""
    model, rel, prior = state.model.eval(), state.rel.eval(), state.prior
    z = evaluation.encode(model.encoder, data, split) if z is None else z
    recon = sum(float(loss.reconstruction(train_forward(state, model.decoder, part), x))
                * len(part) for part, x in zip(z.split(1024), data.chunks(split)))
    out = {"recon_loss": recon / max(len(z), 1)}
    if bool(prior.fitted):
        out.update(evaluation.latent(z, data.entities[split], rel, prior.means.detach(),
                                     prior.chol, state.table, data.space,
                                     cfg["eval"], seed=cfg["run"]["seed"]))
        out["min_separation"] = prior.min_separation()
    model.train()
    rel.train()
    return {f"{split}/{k}": v for k, v in out.items()}


def draw(state, z) -> torch.Tensor:
    """Codes -> pictures in [0, 1] for the decoded metrics and decoded.npz, in the training
    precision (bf16 autocast under train.amp, as the decoder was trained): twice as fast where
    bf16 is native, and the pictures are kept as 8-bit uint8, about bf16's own precision."""
    with torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=state.amp):
        return state.model.decode_images(z)


def final_metrics(state, data, cfg) -> tuple[dict, dict, torch.Tensor]:
    """Every metric of a finished run: test split (latent, decoded, literature), then val; the
    decoded test pictures the decoded metrics read (evaluation.decoded_pictures); and the test
    codes (the pictures start from them)."""
    model, rel, prior = state.model.eval(), state.rel.eval(), state.prior
    z = {split: evaluation.encode(model.encoder, data, split) for split in ("val", "test")}
    # the literature metrics (scikit-learn, mostly without the GIL) on a thread of their own
    # while the rest runs: together they keep both cores busy
    with evaluation.in_background(evaluation.literature, z["val"], data.classes["val"],
                                  z["test"], data.classes["test"],
                                  workers=torch.get_num_threads()) as literature:
        results = evaluate(state, data, cfg, "test", z["test"])
        model, rel = state.model.eval(), state.rel.eval()
        _, cache_dir = resolve_paths(cfg, REPO)
        clf, heads, clf_acc, entries = evaluation.factor_classifier(
            data, cfg["data"]["nuisances"], cache_dir, DATASET, cfg["eval"]["classifier_steps"])
        results.update(entries)
        samples = evaluation.component_samples(prior.means.detach(), prior.chol,
                                               cfg["run"]["seed"])
        pictures = evaluation.decoded_pictures(z["test"], data, lambda codes: draw(state, codes),
                                               rel, seed=cfg["run"]["seed"])
        decoded = evaluation.decoded(pictures, data, state.table, draw(state, samples), clf,
                                     heads, clf_acc)
        results.update({f"test/{k}": v for k, v in decoded.items()})
        val = evaluate(state, data, cfg, "val", z["val"])  # leaves the networks in train mode
        results.update({f"test/{k}": v for k, v in literature.result().items()})
    results.update(val)
    return results, pictures, z["test"]


# --------------------------------------------------------------------------------------------
# Checkpoints: the networks, optimisers, random state and the config that made them


def trained_parts(state) -> dict:
    """{checkpoint key: object} of every network and optimiser the run trains: what save
    writes and restore reads, the block adversary's and the critic's where they are on."""
    parts = {"model": state.model, "rel": state.rel, "prior": state.prior,
             "ae_opt": state.ae_opt, "disc_opt": state.disc_opt, "rel_opt": state.rel_opt,
             "adversary": state.adversary, "leak_opt": state.leak_opt,
             "critic": state.critic, "critic_opt": state.critic_opt}
    return {name: part for name, part in parts.items() if part is not None}


def save(state, run: RunFolder, cfg) -> None:
    save_checkpoint({
        "format": 2,  # 2: the epoch in progress (order, step, sums) when saved inside one
        "dataset": DATASET,
        "epoch": state.epoch,
        "phase": phase_of(state.epoch, cfg),  # of the next epoch; informative, epoch decides
        "elapsed_s": state.elapsed_s,
        "order": state.order,
        "step": state.step,
        "sums": state.sums,
        **{name: part.state_dict() for name, part in trained_parts(state).items()},
        "pseudo": state.pseudo,
        "rng": runtime.rng_state(),
        "config": cfg,
    }, run.checkpoint)


def restore(state, run: RunFolder, device) -> None:
    ckpt = load_checkpoint(run.checkpoint, map_location=device)
    if ckpt.get("dataset", DATASET) != DATASET:
        raise UserError(f"{run.checkpoint} is a {ckpt['dataset']} run; use "
                        f"{ckpt['dataset']}/train.py to resume or evaluate it")
    try:
        for name, part in trained_parts(state).items():
            part.load_state_dict(ckpt[name])
        runtime.set_rng_state({k: v.cpu() if torch.is_tensor(v) else [s.cpu() for s in v]
                               for k, v in ckpt["rng"].items()})
        state.epoch, state.elapsed_s = int(ckpt["epoch"]), float(ckpt["elapsed_s"])
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
        detail = " ".join(str(err).split())[:200]
        raise UserError(f"{run.checkpoint} does not fit the run's config.json "
                        f"({type(err).__name__}: {detail}); it is another run's, or another "
                        "version's") from None
    state.order, state.step = ckpt.get("order"), ckpt.get("step", 0)  # format 1: none
    state.sums = ckpt.get("sums", {})
    state.pseudo = ckpt.get("pseudo")


# --------------------------------------------------------------------------------------------
# The run


def calibration_due(state, cfg) -> bool:
    """Whether the covariances are calibrated before this epoch: one of the last
    prior.calibrate_epochs relational epochs (never at a resume mid-epoch)."""
    last = min(cfg["prior"]["calibrate_epochs"], cfg["train"]["relational_epochs"])
    return state.step == 0 and total_epochs(cfg) - last <= state.epoch < total_epochs(cfg)


def refit_due(state, cfg) -> bool:
    """Whether the covariances are fitted again before this relational epoch (prior.refit_every
    epochs after the fit, and every so many after that; never at a resume mid-epoch)."""
    every, done = cfg["prior"]["refit_every"], state.epoch - cfg["train"]["warmup_epochs"]
    return every > 0 and state.step == 0 and done > 0 and done % every == 0


def pseudo_due(state, cfg) -> bool:
    """Whether this relational epoch begins by pseudo-labelling (train.pseudo_per_entity > 0,
    from train.pseudo_after relational epochs on; never at a resume mid-epoch: the checkpoint
    holds the epoch's pseudo-labels)."""
    done = state.epoch - cfg["train"]["warmup_epochs"]
    return (cfg["train"]["pseudo_per_entity"] > 0 and state.step == 0
            and done >= cfg["train"]["pseudo_after"])


def phase_of(epoch: int, cfg) -> str:
    return "warmup" if epoch < cfg["train"]["warmup_epochs"] else "relational"


def total_epochs(cfg) -> int:
    return cfg["train"]["warmup_epochs"] + cfg["train"]["relational_epochs"]


def train(state, data, cfg, run: RunFolder | None, board: Board | None = None,
          signals: cli.StopSignals | None = None) -> None:
    """Every remaining epoch: validate, log a CSV row, checkpoint and (with a board) write
    TensorBoard scalars and pictures after each (rank 0, the one with a run folder)."""
    total = total_epochs(cfg)
    while state.epoch < total:
        phase = phase_of(state.epoch, cfg)
        state.clock = time.perf_counter()
        if phase == "relational" and not bool(state.prior.fitted):
            init_adaptive_prior(state, data, cfg)
        elif phase == "relational" and refit_due(state, cfg):
            init_adaptive_prior(state, data, cfg, keep_means=True)
        if phase == "relational" and calibration_due(state, cfg):
            calibrate_prior(state, data, cfg)
        if pseudo_due(state, cfg):
            state.pseudo = pseudo_label(state, data, cfg)
            if state.group.is_main:  # the true entities are read for this line alone
                right = (data.entities["train"][state.pseudo[0]] == state.pseudo[1]).float()
                tqdm.write(f"epoch {state.epoch + 1}: {len(right)} pseudo-labels, "
                           f"{float(right.mean()):.3f} of them right", file=sys.stderr)
        train_losses = train_epoch(state, data, cfg, phase, run, signals)
        state.epoch += 1
        count_time(state)
        if not state.group.is_main:  # rank 0 alone evaluates and writes
            continue
        last = state.epoch == total
        val = {}
        if phase == "relational" and (state.epoch % cfg["run"]["eval_every"] == 0 or last):
            val = evaluate(state, data, cfg, "val")
        run.append_metrics(csv_row(state, phase, train_losses, val))
        save(state, run, cfg)
        if board is not None:
            board.scalars(state.epoch, {**train_losses, **val})
            if val:
                log.board_pictures(board, state.epoch, state.model, state.rel, data)
        tqdm.write(progress_line(state, total, phase, train_losses, val), file=sys.stderr)
    if not bool(state.prior.fitted):  # relational_epochs=0: still fit the mixture to evaluate
        init_adaptive_prior(state, data, cfg)
    if signals is not None and signals.received is not None:  # after the last step
        raise Preempted(f"{signals.received} after the last epoch's checkpoint; the final "
                        f"evaluation runs on --resume {run.path if run else 'RUN_DIR'}")


def progress_line(state, total, phase, train_losses, val) -> str:
    parts = [f"epoch {state.epoch}/{total} {phase}", f"{state.elapsed_s:.0f}s"]
    parts += [f"{k.split('/')[1]} {v:.3g}" for k, v in train_losses.items()]
    if val:
        parts += [f"val acc@0.99 {val['val/cluster_acc@0.99']:.3f}",
                  f"accept {val['val/cluster_accept@0.99']:.3f}",
                  f"rel(lat/data) {val['val/rel_acc_latent']:.3f}/{val['val/rel_acc_data']:.3f}"]
    return " | ".join(parts)


DECODED = "decoded.npz"  # the pictures the decoded metrics read (evaluation.save_decoded)


def finish(state, data, cfg, run: RunFolder) -> dict:
    """Every final metric (metrics.json), the decoded test pictures (decoded.npz), every
    picture and report.md, then the `finished` marker. A run stopped before its last epoch
    (--evaluate of it) gets metrics_partial.json instead, and no marker: its numbers are never
    taken for a finished run's."""
    results, pictures, z = final_metrics(state, data, cfg)
    results["wall_time_s"] = state.elapsed_s
    results["epochs"] = state.epoch
    results["labelled_images"] = len(data.labelled)
    results["train_images"] = len(data.images["train"])
    done = state.epoch == total_epochs(cfg)
    run.write_final_metrics(results, partial=not done)
    # decoded.npz is compressed (zlib, without the GIL) while the pictures are drawn
    with evaluation.in_background(evaluation.save_decoded, run.path / DECODED, pictures, data,
                                  state.table) as saved:
        log.write_pictures(run, state.model, state.rel, state.prior, data, cfg, results, z)
        report.write(run, DATASET, cfg, results)
        saved.result()
    if done:
        run.mark_finished(state.epoch)
    else:
        print(f"the run stopped after epoch {state.epoch} of {total_epochs(cfg)}: these are "
              f"partial numbers, in {run.path / METRICS_PARTIAL}; continue it with --resume "
              f"{run.path}", file=sys.stderr)
    return results


# --------------------------------------------------------------------------------------------
# The command line


def saved_config(run: RunFolder) -> dict:
    cfg = configlib.saved(run.config(), config.CONFIG)
    config.validate(cfg)
    return cfg


def main(argv=None) -> int:
    args = cli.parse_args(DATASET, config.PRESETS, argv)
    if args.evaluate:
        run = RunFolder.open(args.evaluate)
        run.lock()
        cfg = saved_config(run)
        _, device = runtime.setup(cfg)
        data = dataset.load_data(cfg, device, REPO)
        state = build_state(cfg, data, device)
        restore(state, run, device)
        cli.print_summary(finish(state, data, cfg, run))
        print(run.path)
        return 0

    if args.resume:
        run = RunFolder.open(args.resume)
        cfg = saved_config(run)
    else:
        cfg = configlib.resolve(config.CONFIG, config.PRESETS, args.preset, args.overrides)
        config.validate(cfg)
    group, device = runtime.setup(cfg)
    if args.resume and group.is_main:
        run.lock()  # one writer per run folder (RunFolder.create locks a new one)
    data = dataset.load_data(cfg, device, REPO)  # data problems surface before any run folder
    state = build_state(cfg, data, device, group)
    if args.resume:
        if run.checkpoint.exists():
            restore(state, run, device)
        if group.is_main:
            run.remove_stale_temporaries()
            run.keep_metrics_through(state.epoch)
    elif group.is_main:
        root = Path(cfg["run"]["root"])
        run = RunFolder.create(root if root.is_absolute() else REPO / root, DATASET,
                               cfg["run"]["name"], cfg)
    else:
        run = None
    if group.is_main:
        print(f"run folder: {run.path}", file=sys.stderr)
        print(f"training forward passes in {'bf16 autocast' if state.amp else 'fp32'} "
              f"(train.amp={cfg['train']['amp']})", file=sys.stderr)
    board = Board(run.path) if group.is_main and cfg["run"]["tensorboard"] else None
    try:
        train(state, data, cfg, run, board, cli.StopSignals().install())
    finally:
        if board is not None:
            board.close()
    if not group.is_main:
        group.barrier()
        return 0
    cli.print_summary(finish(state, data, cfg, run))
    group.barrier()
    print(run.path)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
