"""Shapes3D networks: the AbsAE (encoder, decoder, label-conditioned latent discriminator) and
the relational learner ReL. Sizes come from config.py's `model` section.

Images are (B, 3, 64, 64) colour pictures in [0, 1]; the decoder returns logits (loss.
reconstruction reads them as a Bernoulli likelihood per colour intensity). The scene is
floor, wall and one object a quarter of the picture wide; the encoder mirrored draws it.
"""

import torch
from torch import nn
from torch.nn import functional as F

IMAGE_CHANNELS = 3


def normalised(layer: nn.Module, channels: int, norm: str) -> list[nn.Module]:
    """A convolution, batch-normalised when model.norm is "batch", then its ReLU. Under
    torchrun it normalises by the global batch's statistics (distributed.synchronise_batch_norm)."""
    return [layer, *([nn.BatchNorm2d(channels)] if norm == "batch" else []), nn.ReLU()]


class Encoder(nn.Module):
    """x (B, C, 64, 64) -> z (B, z_dim): four stride-2 convolutions, then two linear layers."""

    def __init__(self, in_channels: int, z_dim: int, channels: list[int], hidden: int,
                 norm: str = "none"):
        super().__init__()
        widths = [in_channels, *channels]
        convs = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            convs += normalised(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), c_out, norm)
        self.net = nn.Sequential(
            *convs,
            nn.Flatten(),
            nn.Linear(channels[-1] * 4 * 4, hidden),  # four halvings: 64 x 64 -> 4 x 4
            nn.ReLU(),
            nn.Linear(hidden, z_dim),
        )

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """z (B, z_dim) -> logits (B, C, 64, 64): the encoder mirrored."""

    def __init__(self, out_channels: int, z_dim: int, channels: list[int], hidden: int,
                 norm: str = "none"):
        super().__init__()
        widths = [*reversed(channels), out_channels]
        deconvs = []
        for c_in, c_out in zip(widths[:-2], widths[1:-1]):
            deconvs += normalised(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
                                  c_out, norm)
        self.net = nn.Sequential(
            nn.Linear(z_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, channels[-1] * 4 * 4),
            nn.ReLU(),
            nn.Unflatten(1, (channels[-1], 4, 4)),
            *deconvs,
            nn.ConvTranspose2d(widths[-2], widths[-1], 4, stride=2, padding=1),  # the logits
        )

    def forward(self, z):
        return self.net(z)


def critic_net(inputs: int, hidden: int) -> nn.Sequential:
    """inputs -> one logit through two hidden layers of LeakyReLU: the net of the latent
    discriminator and of the block critic."""
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
        nn.Linear(hidden, 1),
    )


class Discriminator(nn.Module):
    """D(z, slot) -> logit that z came from the prior.

    `slot` is the entity label in [0, K) or K for "unlabelled" (Makhzani et al. 2015): with
    label k the prior sample is from component k, so labelled codes are pulled to their own
    component and unlabelled ones to the whole mixture.
    """

    def __init__(self, z_dim: int, num_entities: int, hidden: int):
        super().__init__()
        self.num_slots = num_entities + 1
        self.net = critic_net(z_dim + self.num_slots, hidden)

    def forward(self, z, slot):
        onehot = F.one_hot(slot, self.num_slots).to(z.dtype)
        return self.net(torch.cat([z, onehot], dim=1)).squeeze(1)


class AbsAE(nn.Module):
    """The abstraction autoencoder: deterministic encoder, decoder, latent discriminator."""

    def __init__(self, encoder: Encoder, decoder: Decoder, discriminator: Discriminator):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.discriminator = discriminator

    def autoencoder_parameters(self):
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    @torch.no_grad()
    def decode_images(self, z, chunk: int = 1024):
        """Codes (N, D) -> pictures (N, C, 64, 64) in [0, 1], in chunks."""
        return torch.cat([torch.sigmoid(self.decoder(z[i:i + chunk]).float())
                          for i in range(0, len(z), chunk)])


class ReL(nn.Module):
    """Relational learner: R(z, r) -> code of z moved by relation r into the target region."""

    def __init__(self, z_dim: int, num_relations: int, hidden: int, changes=None):
        super().__init__()
        self.num_relations = num_relations
        # (R, D) bool, the dimensions each relation may change (the modular prior's block of
        # its factor); None: every dimension
        self.register_buffer("changes", None if changes is None else changes.bool(),
                             persistent=False)
        self.net = nn.Sequential(
            nn.Linear(z_dim + num_relations, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, z_dim),
        )

    def forward(self, z, relation):
        onehot = F.one_hot(relation, self.num_relations).to(z.dtype)
        moved = self.net(torch.cat([z, onehot], dim=1))
        if self.changes is None:
            return moved
        return torch.where(self.changes[relation], moved, z)


class BlockAdversary(nn.Module):
    """Guesses, from each block of the modular code alone, the bins of the entity factors that
    block does not hold (the free block: every entity factor). What it guesses right leaks:
    a relation moves its factor's block only, so a colour or free block that also says the
    shape drags the old shape along (train.leak_weight)."""

    def __init__(self, block_dims, bin_counts, hidden: int):
        super().__init__()
        self.block_dims, self.bin_counts = list(block_dims), list(bin_counts)
        # the entity factors each block must not tell: all but its own (block f holds factor f)
        self.others = [[g for g in range(len(bin_counts)) if g != f]
                       for f in range(len(block_dims))]
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, sum(self.bin_counts[g] for g in others)))
            for d, others in zip(self.block_dims, self.others))

    def forward(self, z):
        """z (N, D) -> per block, per factor in self.others: logits (N, that factor's bins)."""
        return [head(part).split([self.bin_counts[g] for g in others], dim=1)
                for part, head, others in zip(z.split(self.block_dims, dim=1), self.heads,
                                              self.others)]


class BlockCritic(nn.Module):
    """Tells a batch's codes from the same codes with every block shuffled across the batch on
    its own (loss.shuffle_blocks): the codes the blocks would make if they said nothing of one
    another. Its log-odds on a real code estimate the blocks' total correlation (FactorVAE's
    density-ratio trick, applied to blocks): a background that both the shape block and the
    free block tell shows up as a dependence between them (train.indep_weight)."""

    def __init__(self, z_dim: int, hidden: int):
        super().__init__()
        self.net = critic_net(z_dim, hidden)

    def forward(self, z):
        """z (N, D) -> (N,) log-odds that each code is unshuffled."""
        return self.net(z).squeeze(1)


def build(cfg: dict, space, changes=None) -> tuple[AbsAE, ReL]:
    """The AbsAE and the ReL for a config's model sizes, entities and relations; changes
    (R, D) bool: the code dimensions each relation may change (None: all)."""
    sizes = cfg["model"]
    z_dim, channels, hidden, norm = (sizes["z_dim"], sizes["channels"], sizes["hidden"],
                                     sizes["norm"])
    model = AbsAE(
        Encoder(IMAGE_CHANNELS, z_dim, channels, hidden, norm),
        Decoder(IMAGE_CHANNELS, z_dim, channels, hidden, norm),
        Discriminator(z_dim, space.num_entities, sizes["disc_hidden"]),
    )
    return model, ReL(z_dim, len(space.relation_names), sizes["rel_hidden"], changes)
