"""The supervised term's two forms, in every folder's loss.py, and the label-keeping mirror
augmentation."""

import math

import pytest
import torch
from torch.nn import functional as F

from common import gmm
from common.augment import mirror, recolour_background, shift
from tests.scripts import FOLDERS, module


@pytest.fixture(params=FOLDERS)
def losses(request):
    return module(request.param, "loss")


def two_components():
    means = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    chol = torch.eye(2).repeat(2, 1, 1)
    return means, chol


def test_nll_is_the_own_components_negative_log_density_per_dimension(losses):
    means, chol = two_components()
    z, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    expected = 0.5 * (1.0 + 2 * math.log(2 * math.pi)) / 2
    assert losses.supervised(z, labels, means, chol, "nll").item() == pytest.approx(expected)


def test_xent_adds_the_mixture_posterior_cross_entropy(losses):
    means, chol = two_components()
    z, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    nll = losses.supervised(z, labels, means, chol, "nll")
    both = losses.supervised(z, labels, means, chol, "nll+xent")
    # squared distances 1 and 4: posterior of component 0 is 1 / (1 + e^{-1.5})
    assert (both - nll).item() == pytest.approx(math.log1p(math.exp(-1.5)), rel=1e-5)


def test_xent_gradient_pushes_a_code_away_from_the_confused_component(losses):
    """At the own mean the NLL is flat; only the cross-entropy still moves the code, and it
    moves it away from the other component."""
    means, chol = two_components()
    z = torch.zeros(1, 2, requires_grad=True)
    losses.supervised(z, torch.tensor([0]), means, chol, "nll").backward()
    assert z.grad.abs().max().item() == pytest.approx(0.0, abs=1e-7)
    z.grad = None
    losses.supervised(z, torch.tensor([0]), means, chol, "nll+xent").backward()
    assert z.grad[0, 0].item() > 1e-3  # descent moves x negative: away from the mean at x=3
    assert z.grad[0, 1].item() == pytest.approx(0.0, abs=1e-7)


def test_xent_matches_cross_entropy_of_component_log_probs(losses):
    torch.manual_seed(0)
    means, chol = torch.randn(5, 3), torch.eye(3).repeat(5, 1, 1) * 0.7
    z, labels = torch.randn(32, 3), torch.randint(0, 5, (32,))
    got = losses.supervised(z, labels, means, chol, "nll+xent")
    want = (losses.labelled_nll(z, labels, means, chol)
            + F.cross_entropy(gmm.component_log_prob(z, means, chol), labels))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_consistency_is_the_cross_entropy_of_the_posteriors_and_pulls_to_the_targets(losses):
    """The code midway between two unit components (posterior 1/2 each) against a target at
    component 1's mean: the loss is log 2 whatever the target's posterior, its descent moves
    the code towards component 1, and the target gets no gradient."""
    means, chol = two_components()
    z = torch.tensor([[1.5, 0.0]], requires_grad=True)
    target = torch.tensor([[3.0, 0.0]], requires_grad=True)
    got = losses.consistency(z, target, means, chol)
    assert got.item() == pytest.approx(math.log(2), rel=1e-6)
    got.backward()
    assert z.grad[0, 0].item() < -1e-3 and z.grad[0, 1].item() == pytest.approx(0.0, abs=1e-7)
    assert target.grad is None
    # a code where its target is: the loss is the entropy of that posterior (squared
    # distances 0 and 9 from x=0: posterior of component 0 is 1 / (1 + e^{-4.5}))
    here = torch.zeros(1, 2)
    p = 1 / (1 + math.exp(-4.5))
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert losses.consistency(here, here, means, chol).item() == pytest.approx(entropy, rel=1e-5)


def test_mirror_flips_the_requested_fraction_left_right_and_nothing_else():
    torch.manual_seed(0)
    x = torch.rand(4000, 3, 8, 8)
    out = mirror(x, 0.5)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert flipped.float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert torch.equal(mirror(x, 1.0), x.flip(-1))
    assert mirror(x, 0.0) is x


def test_shift_moves_each_image_by_its_own_offset_and_repeats_the_edges():
    torch.manual_seed(0)
    x = torch.rand(300, 3, 8, 8)
    out = shift(x, 2)
    coords = torch.arange(8)

    def moved_by(image, dy, dx):
        return image[:, (coords - dy).clamp(0, 7)][:, :, (coords - dx).clamp(0, 7)]

    seen = set()
    for image, moved in zip(x, out):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(moved_by(image, dy, dx), moved)]
        assert len(found) == 1  # exactly one move within the range makes each output
        seen.add(found[0])
    assert len(seen) == 25  # every offset in [-2, 2] x [-2, 2] occurs
    assert shift(x, 0) is x
    # an object 4 px from the edge, moved 2 px towards it, keeps its every pixel
    y = torch.zeros(1, 1, 16, 16)
    y[0, 0, 4:8, 5:9] = 1.0
    torch.manual_seed(1)
    moved = shift(y, 2)
    assert moved.sum().item() == 16.0 and moved.max().item() == 1.0


def test_object_mask_finds_the_object_on_its_background_and_the_weight_counts_it(losses):
    x = torch.full((2, 3, 64, 64), 0.4)
    x[0, :, 10:20, 30:35] = 0.9  # a 10 x 5 object
    x[1] = torch.tensor([0.8, 0.2, 0.5])[:, None, None]  # another background, no object
    x[1, 1, 40:43, 5:9] = 0.6  # a 3 x 4 object differing in one channel only
    mask = losses.object_mask(x)
    assert mask.shape == (2, 1, 64, 64)
    assert mask[0].sum() == 50 and mask[0, 0, 10:20, 30:35].all()
    assert mask[1].sum() == 12 and mask[1, 0, 40:43, 5:9].all()

    logits = torch.randn(2, 3, 64, 64)
    plain = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    assert losses.reconstruction(logits, x).item() == pytest.approx(plain.sum().item() / 2)
    # weight w: the object's pixels count 1 + w times, the background's once
    extra = (plain * mask).sum().item() / 2
    assert losses.reconstruction(logits, x, 4.0).item() == pytest.approx(
        plain.sum().item() / 2 + 4 * extra, rel=1e-5)


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_block_adversary_reads_a_leak_and_the_confusion_is_least_when_it_cannot(folder):
    """Codes of 2 factors (3 and 2 bins) in blocks of 2, 2 and a free block of 2: when the
    free block holds factor 0's bin, the adversary learns to read it (its loss on that factor
    falls far below log 3), and not where the block is noise; the encoder's confusion term is
    log(bins) for uniform guesses and larger for confident ones."""
    losses, networks = module(folder, "loss"), module(folder, "model")
    torch.manual_seed(0)
    bins = torch.stack([torch.randint(0, 3, (512,)), torch.randint(0, 2, (512,))], 1)

    def trained_guess_loss(free):
        z = torch.cat([torch.randn(512, 4), free], 1)
        adversary = networks.BlockAdversary([2, 2, 2], [3, 2], hidden=32)
        assert adversary.others == [[1], [0], [0, 1]]
        opt = torch.optim.Adam(adversary.parameters(), lr=1e-2)
        for _ in range(200):
            opt.zero_grad()
            losses.leak_guess(adversary(z), adversary.others, bins).backward()
            opt.step()
        return F.cross_entropy(adversary(z)[2][0], bins[:, 0]).item()

    leaky = trained_guess_loss(torch.stack([bins[:, 0].float(), torch.randn(512)], 1))
    clean = trained_guess_loss(torch.randn(512, 2))
    assert leaky < 0.05 and clean > 0.8 * math.log(3)

    uniform = [(torch.zeros(4, 3),), (torch.zeros(4, 2),)]
    expected = (math.log(3) + math.log(2)) / 2
    assert losses.leak_confusion(uniform).item() == pytest.approx(expected)
    sure = [(torch.tensor([[9.0, 0.0, 0.0]]).repeat(4, 1),), (torch.zeros(4, 2),)]
    assert losses.leak_confusion(sure).item() > expected + 1


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_block_critic_tells_dependent_blocks_from_shuffled_and_not_independent_ones(folder):
    """Codes in blocks of 2, 2 and 1: shuffling keeps every block's rows (each block is a
    permutation of itself) and breaks their pairing. When block 1 repeats block 0 with a little
    noise, the critic learns to tell the codes from their shuffles (its loss far below
    2 log 2, the encoder's dependence term, its mean log-odds, well above 0); when the blocks
    are independent it cannot (loss near 2 log 2, log-odds near 0)."""
    losses, networks = module(folder, "loss"), module(folder, "model")
    torch.manual_seed(0)
    dims = [2, 2, 1]
    z = torch.randn(512, 5)
    shuffled = losses.shuffle_blocks(z, dims)
    for part, moved in zip(z.split(dims, 1), shuffled.split(dims, 1)):
        assert torch.equal(part[part[:, 0].argsort()], moved[moved[:, 0].argsort()])
    assert (shuffled[:, :2] == z[:, :2]).all(1).float().mean() < 0.05

    def dependent(n):  # block 1 repeats block 0, a little noise added
        codes = torch.randn(n, 5)
        codes[:, 2:4] = codes[:, :2] + 0.1 * torch.randn(n, 2)
        return codes

    def trained(draw):  # fresh codes every step: the critic cannot learn the sample by heart
        critic = networks.BlockCritic(5, hidden=64)
        opt = torch.optim.Adam(critic.parameters(), lr=3e-3)

        def critic_loss(codes):  # what train.independence_step trains the critic on
            return losses.discriminator(critic(codes), critic(losses.shuffle_blocks(codes, dims)))

        for _ in range(150):
            opt.zero_grad()
            critic_loss(draw(256)).backward()
            opt.step()
        with torch.no_grad():
            codes = draw(2048)
            return critic_loss(codes).item(), losses.dependence(critic(codes)).item()

    loss_dependent, log_odds_dependent = trained(dependent)
    loss_independent, log_odds_independent = trained(lambda n: torch.randn(n, 5))
    assert loss_dependent < 0.5 * 2 * math.log(2) and log_odds_dependent > 1.0
    assert loss_independent > 0.85 * 2 * math.log(2) and abs(log_odds_independent) < 0.5


def test_block_invariance_whitens_the_entity_blocks_and_ignores_the_free_block(losses):
    """Codes of 2 + 1 entity dimensions and a free dimension: the loss is the mean squared
    whitened difference over the entity dimensions alone, read in the target's component
    (here of scale 2 on the first block), and only z gets a gradient."""
    chol = torch.eye(4).repeat(2, 1, 1)
    chol[1, :2, :2] *= 2.0  # component 1: its first block twice as wide
    target = torch.zeros(2, 4, requires_grad=True)
    z = torch.tensor([[1.0, 0.0, 2.0, 5.0], [2.0, 2.0, 0.0, -7.0]], requires_grad=True)
    got = losses.block_invariance(z, target, torch.tensor([0, 1]), chol, entity_dims=3)
    # picture 0 in component 0: 1 + 0 + 4; picture 1 in component 1: 1 + 1 + 0 (whitened)
    assert got.item() == pytest.approx((5.0 + 2.0) / 6)
    got.backward()
    assert z.grad[:, 3].abs().max().item() == 0.0  # the free block is the nuisances' to keep
    assert z.grad[0, 2].item() > 0 and target.grad is None
    same = torch.zeros(2, 4)
    same[:, 3] = torch.tensor([3.0, -3.0])  # other nuisances, the same entity blocks
    assert losses.block_invariance(same, torch.zeros(2, 4), torch.tensor([0, 1]), chol,
                                   entity_dims=3).item() == 0.0


def test_recolour_background_gives_pictures_another_pictures_backdrop_and_keeps_the_object():
    """Pictures of one flat backdrop colour each with a square object: every chosen picture
    takes a backdrop colour of the batch, its shading kept and its object untouched; at
    prob 0 nothing changes."""
    torch.manual_seed(0)
    colours = torch.rand(64, 3) * 0.6 + 0.2
    x = colours[:, :, None, None].expand(64, 3, 16, 16).clone()
    x[:, :, 2:4, 2:4] += 0.03  # shading within the threshold: it is backdrop too
    x[:, :, 6:10, 6:10] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # the object
    out = recolour_background(x, 1.0)
    assert torch.equal(out[:, :, 6:10, 6:10], x[:, :, 6:10, 6:10])
    new = out[:, :, 0, 0]  # each picture's new backdrop colour
    nearest = (new[:, None] - colours[None]).abs().amax(2).min(1).values
    assert nearest.max().item() < 1e-6  # one of the batch's colours
    assert (new - colours).abs().amax(1).gt(1e-6).float().mean().item() > 0.9
    shading = out[:, :, 2, 2] - out[:, :, 0, 0]
    assert shading.sub(0.03).abs().max().item() < 1e-5
    assert recolour_background(x, 0.0) is x
