"""No per-sample Python loops in a training step: the number of tensor operations needed to
build a batch does not grow with the batch size. (Kernels may pick a different internal path
at another size, so counts may differ by a few; a loop over 4096 samples would add thousands.)"""

import copy

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from common import distributed, gmm
from tests.scripts import FOLDERS, module


def op_count(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return len([e for e in prof.events() if e.name.startswith("aten::")])


def relation_batch(space, prior, table, n):
    """What rel_step builds: sources, relations, targets and their prior samples."""
    source = torch.randint(0, space.num_entities, (n,))
    relation = torch.randint(0, len(space.relation_names), (n,))
    target = table[relation, source]
    return prior.sample(source), prior.sample(target)


@pytest.mark.parametrize("folder", FOLDERS)
def test_relation_batch_costs_the_same_number_of_ops_at_64_and_4096(folder):
    space = module(folder, "dataset").entity_space(module(folder, "config").CONFIG)
    prior = module(folder, "prior").MixturePrior(space.num_entities, 10, learn_means=True)
    labels = torch.arange(space.num_entities).repeat_interleave(20)
    prior.fit(torch.randn(len(labels), 10), labels, 0.5)
    table = torch.as_tensor(space.table)
    small = op_count(lambda: relation_batch(space, prior, table, 64))
    large = op_count(lambda: relation_batch(space, prior, table, 4096))
    assert small < 100 and large <= small + 10


def test_mixture_sampling_and_classification_do_not_loop_over_samples():
    means, chol = torch.randn(27, 10), torch.eye(10).repeat(27, 1, 1)
    for fn in (lambda n: gmm.sample(means, chol, torch.randint(0, 27, (n,))),
               lambda n: gmm.classify(torch.randn(n, 10), means, chol, 0.99)):
        small, large = op_count(lambda: fn(64)), op_count(lambda: fn(4096))
        assert small < 200 and large <= small + 10


@pytest.mark.parametrize("folder", FOLDERS)
def test_augmentation_does_not_loop_over_images(folder):
    cfg = copy.deepcopy(module(folder, "config").CONFIG)
    cfg["data"].update(noise_prob=0.5, mask_prob=0.5)
    augment = module(folder, "dataset").augment
    channels = module(folder, "model").IMAGE_CHANNELS
    x = lambda n: torch.zeros(n, channels, 64, 64)  # noqa: E731
    small, large = op_count(lambda: augment(x(64), cfg)), op_count(lambda: augment(x(4096), cfg))
    assert small < 150 and large <= small + 10


@pytest.mark.parametrize("folder", FOLDERS)
def test_rel_step_op_count_is_independent_of_rel_batch_size(folder):
    train = module(folder, "train")
    counts = []
    for size in (64, 4096):
        cfg = copy.deepcopy(train.config.CONFIG)
        cfg["train"]["rel_batch_size"] = size
        space = train.dataset.entity_space(cfg)
        rel = train.networks.ReL(10, len(space.relation_names), 32)
        prior = train.priors.MixturePrior(space.num_entities, 10, True)
        labels = torch.arange(space.num_entities).repeat_interleave(20)
        prior.fit(torch.randn(len(labels), 10), labels, 0.5)
        state = train.State(
            model=None, rel=rel, prior=prior, ae_opt=None, disc_opt=None,
            rel_opt=torch.optim.Adam([*rel.parameters(), prior.means]),
            table=torch.as_tensor(space.table), group=distributed.Group(),
            device=torch.device("cpu"), amp=False)
        counts.append(op_count(lambda: train.rel_step(state, space, cfg)))
    assert counts[1] <= counts[0] + 30 < 2000
