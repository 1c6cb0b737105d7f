"""prior.kind = modular: one block of the code per entity factor, one component per bin in each
block, an entity's component the product of its bins'; and the calibration of either kind's
covariances (prior.calibrate_epochs). Run on every folder's own prior.py, model.ReL and
train.calibration_due; one real tiny dSprites run with the modular kind."""

import copy
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from common import gmm
from tests.scripts import FOLDERS, module, run, tiny


def _plain(folder):
    """The folder's config with the paper's prior: one component per entity in 10 dimensions
    (Shapes3D's default is modular with a free block; these tests choose their own)."""
    cfg = copy.deepcopy(module(folder, "config").CONFIG)
    cfg["model"]["z_dim"] = 10
    cfg["prior"].update(kind="entity", blocks=[], free_dims=0)
    return cfg


def _modular(folder, blocks=()):
    cfg = _plain(folder)
    cfg["prior"].update(kind="modular", blocks=list(blocks))
    space = module(folder, "dataset").entity_space(cfg)
    return module(folder, "prior").build(cfg, space), space, cfg


@pytest.mark.parametrize("folder", FOLDERS)
def test_an_entity_is_the_product_of_its_bins_components(folder):
    prior, space, cfg = _modular(folder)
    z_dim, bins = cfg["model"]["z_dim"], space.bins_of_entity(np.arange(space.num_entities))
    dims = prior.block_dims
    assert sum(dims) == z_dim and max(dims) - min(dims) <= 1  # the even split
    torch.manual_seed(0)
    labels = torch.arange(space.num_entities).repeat_interleave(6)
    z = torch.randn(len(labels), z_dim) * 2 + torch.randn(space.num_entities, z_dim)[labels]
    prior.fit(z, labels, cov_scale=0.5)

    # each bin's block mean is the mean block of every labelled code whose entity has that bin
    for f, part in enumerate(z.split(dims, dim=1)):
        of_bin = torch.as_tensor(bins[labels.numpy(), f])
        for b in range(space.bin_counts[f]):
            assert torch.allclose(prior.block_means[f][b], part[of_bin == b].mean(0), atol=1e-5)
    # an entity's density is the product of its blocks' densities (block-diagonal covariance)
    points = torch.randn(50, z_dim) * 3
    entity = 7
    joint = gmm.component_log_prob(points, prior.means[entity:entity + 1],
                                   prior.chol[entity:entity + 1])[:, 0]
    product = sum(
        gmm.component_log_prob(part, prior.block_means[f][bins[entity, f]][None],
                               prior.block_chols()[f][bins[entity, f]][None])[:, 0]
        for f, part in enumerate(points.split(dims, dim=1)))
    assert torch.allclose(joint, product, atol=1e-4)
    off_block = prior.chol[entity][:dims[0], dims[0]:]
    assert torch.count_nonzero(off_block) == 0


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_relation_changes_only_its_factors_block(folder):
    prior, space, cfg = _modular(folder)
    changes = prior.relation_changes(space)
    assert changes.shape == (len(space.relation_names), cfg["model"]["z_dim"])
    assert changes.sum(1).tolist() == [prior.block_dims[f] for f in space.relation_factors]
    torch.manual_seed(0)
    rel = module(folder, "model").ReL(cfg["model"]["z_dim"], len(space.relation_names), 32,
                                      changes)
    z = torch.randn(64, cfg["model"]["z_dim"])
    for r in range(len(space.relation_names)):
        moved = rel(z, torch.full((64,), r))
        assert torch.equal(moved[:, ~changes[r]], z[:, ~changes[r]])  # other blocks kept
        assert (moved[:, changes[r]] - z[:, changes[r]]).abs().min() > 0  # its block moves
    # the entity kind lets every relation change every dimension
    entity_prior = module(folder, "prior").build(_plain(folder), space)
    assert entity_prior.relation_changes(space) is None


@pytest.mark.parametrize("folder", FOLDERS)
def test_modular_block_sizes_are_checked(folder):
    config = module(folder, "config")
    cfg = _plain(folder)
    cfg["prior"].update(kind="modular", blocks=[cfg["model"]["z_dim"]])
    with pytest.raises(Exception, match="prior.blocks must be"):
        config.validate(cfg)
    factors = len(cfg["entities"]["bins"])
    blocks = [1] * (factors - 1) + [cfg["model"]["z_dim"] - factors + 1]
    prior, _, _ = _modular(folder, blocks)
    assert list(prior.block_dims) == blocks


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_free_block_is_shared_by_every_entity_and_moved_by_no_relation(folder):
    config = module(folder, "config")
    cfg = _plain(folder)
    factors, free = len(cfg["entities"]["bins"]), 3
    cfg["model"]["z_dim"] = 10 + free
    cfg["prior"].update(kind="modular", free_dims=free)
    config.validate(cfg)
    space = module(folder, "dataset").entity_space(cfg)
    prior = module(folder, "prior").build(cfg, space)
    assert len(prior.block_dims) == factors + 1 and prior.block_dims[-1] == free
    assert sum(prior.block_dims[:-1]) == 10 and max(prior.block_dims[:-1]) - min(
        prior.block_dims[:-1]) <= 1  # the factor blocks split the rest evenly
    torch.manual_seed(0)
    labels = torch.arange(space.num_entities).repeat_interleave(4)
    z = torch.randn(len(labels), 13) + torch.randn(space.num_entities, 13)[labels] * 3
    prior.fit(z, labels, cov_scale=1.0)
    # one component for every entity, fitted to the free dimensions of every labelled code
    assert torch.allclose(prior.means[:, -free:], z[:, -free:].mean(0).expand(
        space.num_entities, free), atol=1e-5)
    assert torch.equal(prior.chol[:, -free:, -free:], prior.chol[:1, -free:, -free:].expand(
        space.num_entities, free, free))
    # classification reads the factor blocks alone: the free block's density is the same for all
    changes = prior.relation_changes(space)
    assert not changes[:, -free:].any() and changes[:, :-free].any(1).all()

    for bad, message in (({"kind": "entity"}, "needs prior.kind=modular"),
                         ({"blocks": [1] * (factors - 1) + [14 - factors]}, "z_dim - prior.free"),
                         ({"free_dims": 13 - factors + 1}, "one dimension per entity factor")):
        wrong = copy.deepcopy(cfg)
        wrong["prior"].update(bad)
        with pytest.raises(Exception, match=message):
            config.validate(wrong)


@pytest.mark.parametrize("kind", ["entity", "modular"])
def test_a_refit_moves_the_covariances_to_the_codes_and_keeps_the_learnt_means(kind):
    cfg = _plain("shapes3d")
    cfg["prior"]["kind"] = kind
    space = module("shapes3d", "dataset").entity_space(cfg)
    prior = module("shapes3d", "prior").build(cfg, space)
    torch.manual_seed(0)
    labels = torch.arange(space.num_entities).repeat_interleave(5)
    # codes with the modular structure: an entity's centre is its bins' centres side by side
    bins = torch.as_tensor(space.bins_of_entity(np.arange(space.num_entities)))
    dims = module("shapes3d", "prior").block_dims(10, len(space.bin_counts), [])
    centres = torch.cat([torch.randn(n, d)[bins[:, f]] * 5
                         for f, (n, d) in enumerate(zip(space.bin_counts, dims))], 1)
    prior.fit(centres[labels] + torch.randn(len(labels), 10), labels, cov_scale=1.0)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.1)  # as the relational loss moves them
    learnt = prior.means.detach().clone()
    # the encoder has drawn the codes 4 times tighter about their centres
    tight = centres[labels] + 0.25 * torch.randn(len(labels), 10)
    before = torch.logdet(prior.chol[0] @ prior.chol[0].T)
    prior.fit(tight, labels, cov_scale=1.0, keep_means=True)
    assert torch.equal(prior.means.detach(), learnt)
    after = torch.logdet(prior.chol[0] @ prior.chol[0].T)
    assert after < before - 10 * math.log(2)  # each of 10 variances at least 4 times smaller


@pytest.mark.runs
def test_a_modular_run_trains_evaluates_and_resumes_its_blocks(tmp_path):
    # with a free block of 2 dimensions, and 4 labels for each of the 3 bins of each factor
    result = run("dsprites", tiny(tmp_path, "modular")
                 + ["prior.kind=modular", "prior.refit_every=1", "model.z_dim=12",
                    "prior.free_dims=2", "data.labelled_per_bin=4"])
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "runs" / "modular"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for factor in ("shape", "posX", "posY"):
        assert 0.0 <= metrics[f"test/factor_acc/{factor}"] <= 1.0
    assert metrics["labelled_images"] == 12  # 3 bins x 4: each image labels a bin of each factor
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert {"block_means.0", "block_chol2"} <= set(ckpt["prior"])
    assert ckpt["prior"]["block_chol3"].shape == (1, 2, 2)  # the free block: one component
    again = run("dsprites", ["--evaluate", str(run_dir)])
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics


@pytest.mark.parametrize("kind", ["entity", "modular"])
@pytest.mark.parametrize("folder", FOLDERS)
def test_calibration_makes_acceptance_at_q_about_q_and_keeps_the_learnt_means(folder, kind):
    """Components fitted to 5 codes each accept far fewer than q of the codes their entities
    really spread over; calibrated to the codes about the learnt means they accept about q."""
    cfg = _plain(folder)
    cfg["prior"]["kind"] = kind
    space = module(folder, "dataset").entity_space(cfg)
    prior = module(folder, "prior").build(cfg, space)
    torch.manual_seed(0)
    bins = torch.as_tensor(space.bins_of_entity(np.arange(space.num_entities)))
    dims = module(folder, "prior").block_dims(10, len(space.bin_counts), [])
    centres = torch.cat([torch.randn(n, d)[bins[:, f]] * 20
                         for f, (n, d) in enumerate(zip(space.bin_counts, dims))], 1)
    few = torch.arange(space.num_entities).repeat_interleave(5)
    prior.fit(centres[few] + 0.3 * torch.randn(len(few), 10), few, cov_scale=0.5)
    learnt = prior.means.detach().clone()
    many = torch.arange(space.num_entities).repeat_interleave(400)
    codes = centres[many] + torch.randn(len(many), 10)  # where the encoder puts every image
    thin = prior.classify(codes, 0.9)[1].float().mean().item()
    prior.calibrate(codes, many)
    assert torch.equal(prior.means.detach(), learnt)
    component, accepted = prior.classify(codes, 0.9)
    assert thin < 0.2
    assert accepted.float().mean().item() == pytest.approx(0.9, abs=0.03)
    assert (component == many).float().mean().item() > 0.99


@pytest.mark.parametrize("folder", FOLDERS)
def test_calibration_begins_each_of_the_last_relational_epochs_only(folder):
    train = module(folder, "train")
    cfg = copy.deepcopy(module(folder, "config").CONFIG)
    cfg["train"].update(warmup_epochs=2, relational_epochs=3)

    def due(calibrate_epochs, epoch, step=0):
        cfg["prior"]["calibrate_epochs"] = calibrate_epochs
        return train.calibration_due(SimpleNamespace(epoch=epoch, step=step), cfg)

    assert [e for e in range(5) if due(2, e)] == [3, 4]  # epochs completed before the last two
    assert [e for e in range(5) if due(9, e)] == [2, 3, 4]  # every relational epoch, no warm-up
    assert not any(due(0, e) for e in range(5))
    assert not due(2, 4, step=7)  # a resume inside the epoch keeps the checkpoint's components
