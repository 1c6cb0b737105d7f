"""On-the-fly input corruptions (the reconstruction target stays the clean image), batched:
no per-image Python loop. x is (B, C, H, W) float in [0, 1]."""

import torch


def mask_square(x, prob: float, size: int):
    """Blank (set to 0) one random size x size square in a `prob` fraction of the images."""
    if prob <= 0:
        return x
    batch, side = x.shape[0], x.shape[-1]
    masked = torch.rand(batch, device=x.device) < prob
    corner = torch.randint(0, side - size + 1, (batch, 2), device=x.device)
    coords = torch.arange(side, device=x.device)
    rows = (coords[None] >= corner[:, :1]) & (coords[None] < corner[:, :1] + size)  # (B, side)
    cols = (coords[None] >= corner[:, 1:]) & (coords[None] < corner[:, 1:] + size)
    square = rows[:, :, None] & cols[:, None, :] & masked[:, None, None]
    return x.masked_fill(square[:, None], 0.0)


def salt_and_pepper(x, prob: float, rate: float):
    """In a `prob` fraction of the images, set a `rate` fraction of the pixels (all channels
    together) to black or white at random."""
    if prob <= 0:
        return x
    batch, _, height, width = x.shape
    noisy = torch.rand(batch, 1, 1, 1, device=x.device) < prob
    hit = (torch.rand(batch, 1, height, width, device=x.device) < rate) & noisy
    white = (torch.rand(batch, 1, height, width, device=x.device) < 0.5).to(x.dtype)
    return torch.where(hit, white, x)


def mirror(x, prob: float):
    """Flip a `prob` fraction of the images left-right. Only for inputs whose label a mirror
    keeps (an object's colour, shape and size; not a horizontal position)."""
    if prob <= 0:
        return x
    flipped = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < prob
    return torch.where(flipped, x.flip(-1), x)


def shift(x, max_shift: int):
    """Translate every image by its own random whole-pixel offset in [-max_shift, max_shift]
    on each axis, repeating the edge pixels into the uncovered border. Only for inputs whose
    label a move keeps (where position is a nuisance: MPI3D's arm, not dSprites' bins)."""
    if max_shift <= 0:
        return x
    batch, channels, height, width = x.shape
    offsets = torch.randint(-max_shift, max_shift + 1, (2, batch, 1), device=x.device)
    rows = (torch.arange(height, device=x.device) - offsets[0]).clamp(0, height - 1)  # (B, H)
    cols = (torch.arange(width, device=x.device) - offsets[1]).clamp(0, width - 1)  # (B, W)
    x = x.gather(2, rows[:, None, :, None].expand(batch, channels, height, width))
    return x.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


def recolour_background(x, prob: float, threshold: float = 0.1):
    """Give a `prob` fraction of the pictures x (B, C, H, W) in [0, 1] the background colour of
    another picture of the batch (a random pairing). A pixel is background where every channel
    is within `threshold` of its picture's background colour, the median of its border pixels
    (the object never touches the border); it is shifted by the difference of the two colours,
    so the backdrop's shading stays. Only for inputs whose label the backdrop does not carry
    (MPI3D's background colour is a nuisance)."""
    if prob <= 0:
        return x
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    colour = border.median(dim=2).values[:, :, None, None]  # (B, C, 1, 1)
    backdrop = (x - colour).abs().amax(dim=1, keepdim=True) <= threshold  # (B, 1, H, W)
    other = colour[torch.randperm(len(x), device=x.device)]
    chosen = torch.rand(len(x), 1, 1, 1, device=x.device) < prob
    return torch.where(backdrop & chosen, (x + other - colour).clamp(0, 1), x)
