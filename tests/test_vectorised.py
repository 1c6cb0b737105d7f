"""No per-sample Python loops in a training step: the number of tensor operations needed to
build a batch does not grow with the batch size. (Kernels may pick a different internal path
at another size, so counts may differ by a few; a loop over 4096 samples would add thousands.)"""

import copy

import torch
from torch.profiler import ProfilerActivity, profile

from common import distributed, gmm
from common import training
from common.mixture import MixturePrior
from common.networks import ReL
from dsprites.config import CONFIG
from dsprites.dataset import augment, entity_space


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


def test_relation_batch_costs_the_same_number_of_ops_at_64_and_4096():
    space = entity_space(CONFIG)
    prior = MixturePrior(space.num_entities, 10, learn_means=True)
    prior.fit(torch.randn(27 * 20, 10), torch.arange(27).repeat_interleave(20), 0.5)
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


def test_augmentation_does_not_loop_over_images():
    cfg = copy.deepcopy(CONFIG)
    cfg["data"].update(noise_prob=0.5, mask_prob=0.5)
    x = lambda n: torch.zeros(n, 1, 64, 64)  # noqa: E731
    small, large = op_count(lambda: augment(x(64), cfg)), op_count(lambda: augment(x(4096), cfg))
    assert small < 100 and large <= small + 10


def test_rel_step_op_count_is_independent_of_rel_batch_size():
    counts = []
    for size in (64, 4096):
        cfg = copy.deepcopy(CONFIG)
        cfg["train"]["rel_batch_size"] = size
        space = entity_space(cfg)
        state = training.State(
            recipe=None, model=None, rel=ReL(10, 5, 32), prior=MixturePrior(27, 10, True),
            ae_opt=None, disc_opt=None, rel_opt=None, table=torch.as_tensor(space.table),
            group=distributed.Group(), device=torch.device("cpu"), amp=False)
        state.prior.fit(torch.randn(540, 10), torch.arange(27).repeat_interleave(20), 0.5)
        state.rel_opt = torch.optim.Adam([*state.rel.parameters(), state.prior.means])
        counts.append(op_count(lambda: training.rel_step(state, space, cfg)))
    assert counts[1] <= counts[0] + 30 < 2000
