"""Shapes3D losses: reconstruction, the adversarial game, the supervised and relational terms,
and the separation guard of the adaptive means."""

import torch
from torch.nn import functional as F

from common import gmm


def reconstruction(logits, x, object_weight: float = 0.0):
    """Binary cross-entropy per colour intensity in [0, 1], summed over the image, averaged
    over the batch (disentanglement_lib's choice for every dataset). Floor and wall fill most
    of the picture; under a squared error the decoder could nearly ignore the object whose
    hue, size and shape are the entity, while this loss's gradient stays large wherever a
    saturated colour is wrong.

    object_weight w (train.recon_object_weight): each pixel that differs from the picture's
    background (object_mask) counts 1 + w times, so a small object is not blurred for the
    sake of the background. It reads nothing but the picture itself."""
    if object_weight == 0:
        return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
    weight = 1 + object_weight * object_mask(x)
    return F.binary_cross_entropy_with_logits(logits, x, weight, reduction="sum") / x.shape[0]


def object_mask(x, threshold: float = 0.1):
    """(B, 1, H, W) 1 where a pixel of x (B, C, H, W) in [0, 1] differs by more than
    `threshold` in some channel from its picture's background colour, estimated as the
    median of the picture's border pixels (no object touches the border)."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values[:, :, None, None]  # (B, C, 1, 1)
    return ((x - background).abs().amax(dim=1, keepdim=True) > threshold).to(x.dtype)


def discriminator(real_logits, fake_logits):
    """The discriminator learns prior samples -> 1, encoded codes -> 0."""
    return (
        F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    )


def generator(fake_logits):
    """The encoder learns to make its codes look like prior samples."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def labelled_nll(z, labels, means, chol):
    """Negative log-likelihood of labelled codes under their own component, per dimension."""
    logp = gmm.component_log_prob(z, means, chol)  # (N, K)
    return -logp.gather(1, labels[:, None]).mean() / z.shape[1]


def supervised(z, labels, means, chol, kind: str):
    """How well labelled codes sit in their own component.

    nll:      negative log-likelihood under the own component (pulls codes to it);
    nll+xent: plus the cross-entropy of the mixture posterior, which also pushes codes away
              from the components they are confused with: a classifier's loss, so entity
              assignment generalises to the unlabelled images much sooner.
    """
    logp = gmm.component_log_prob(z, means, chol)  # (N, K), shared by both terms
    loss = -logp.gather(1, labels[:, None]).mean() / z.shape[1]  # labelled_nll
    if kind == "nll+xent":
        loss = loss + F.cross_entropy(logp, labels)
    return loss


def consistency(z, target_z, means, chol):
    """Cross-entropy of the mixture posterior of codes z (N, D) against that of target_z, the
    codes of the same pictures under a transformation that keeps the entity (no gradient
    through the target): what the encoder says a picture is should not depend on that
    transformation. It reads no labels, so every unlabelled picture teaches it."""
    with torch.no_grad():
        target = gmm.component_log_prob(target_z, means, chol).softmax(1)
    return -(target * gmm.component_log_prob(z, means, chol).log_softmax(1)).sum(1).mean()


def block_invariance(z, target_z, components, chol, entity_dims: int):
    """Squared distance between the entity blocks (the first entity_dims dimensions; the free
    block follows) of codes z (N, D) and those of target_z, the same pictures with their
    nuisances changed (no gradient through the target), in the whitened frame of the target's
    component (components (N,), chol (K, D, D) block-diagonal, so each block is whitened on its
    own); mean per dimension. Where a code sits inside its bins' components should not say where
    the object stands or what lies behind it: that is the free block's, which a relation does
    not move. It reads no labels."""
    white = gmm.whiten(z - target_z.detach(), chol[components])
    return white[:, :entity_dims].pow(2).mean()


def leak_guess(guesses, others, bins):
    """The block adversary's loss: cross-entropy of its guesses (model.BlockAdversary) against
    the bins (N, F) of the pictures' entities, mean over the guesses."""
    terms = [F.cross_entropy(logits, bins[:, g]) for block, factors in zip(guesses, others)
             for logits, g in zip(block, factors)]
    return sum(terms) / len(terms)


def leak_confusion(guesses):
    """The encoder's side: cross-entropy of every guess against the uniform distribution over
    its bins, least when no block says anything of the factors it does not hold. Pushing the
    guesses to uniform, not the adversary's loss up, keeps the encoder from encoding the
    factors backwards (a sure wrong guess tells as much as a right one)."""
    terms = [-F.log_softmax(logits, dim=1).mean(dim=1).mean() for block in guesses
             for logits in block]
    return sum(terms) / len(terms)


def shuffle_blocks(z, block_dims):
    """z (N, D) with each block (block_dims) permuted across the batch on its own: a sample of
    the product of the blocks' marginals, which keeps what each block says and breaks what the
    blocks say together."""
    return torch.cat([part[torch.randperm(len(z), device=z.device)]
                      for part in z.split(list(block_dims), dim=1)], dim=1)


def dependence(real_logits):
    """The encoder's side: the critic's mean log-odds on the real codes, an estimate of the
    blocks' total correlation (0 when the blocks are independent, so that the critic cannot
    tell a code from a shuffled one)."""
    return real_logits.mean()


def relational(moved, target_sample, target_component, means, chol, kind: str):
    """How far ReL's output is from the target entity's region.

    mse:  squared error to a sample of the target component (the paper's choice);
    nll:  negative log-likelihood under the target component;
    xent: cross-entropy of the mixture posterior against the target component.
    """
    if kind == "mse":
        return F.mse_loss(moved, target_sample)
    if kind == "nll":
        return labelled_nll(moved, target_component, means, chol)
    return F.cross_entropy(gmm.component_log_prob(moved, means, chol), target_component)


def separation(means, chol, min_distance: float):
    """Hinge on pairwise Mahalanobis distances between learnt means, against collapse."""
    maha = gmm.mahalanobis_sq(means, means, chol)  # (K, K)
    off_diagonal = ~torch.eye(len(means), dtype=torch.bool, device=means.device)
    dist = maha[off_diagonal].clamp_min(1e-12).sqrt()
    return F.relu(min_distance - dist).pow(2).mean()
