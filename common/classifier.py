"""A ground-truth factor classifier: reads factor values off pictures, so that what the model
*draws* can be scored, not only where its codes land.

One small CNN with a softmax head per factor that varies in the subset: entity factors are
predicted as their bin, nuisance factors as their raw value among those used. It is trained
with every ground-truth label of the training split (it is a measuring instrument, not part
of the model), tested on the test split, and cached in the data cache folder under a hash of
the training pictures, their labels and its settings, so every run on the same data shares it.

Decoded pictures are smoother than real ones, so training adds a random blur to half of the
pictures: the instrument should read a slightly soft square as a square.

Every convolution is followed by batch normalisation: without it the network learns colour
and size but reads a small object's shape (MPI3D's) at chance in the same number of steps.
"""

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from common.checkpoint import load_checkpoint, save_checkpoint
from common.data import Data, batches

VERSION = 4  # 4: initial weights from settings["seed"] too, not from the caller's RNG state
SETTINGS = {"steps": 1500, "batch_size": 64, "lr": 1e-3, "channels": [16, 32, 32, 32],
            "hidden": 128, "seed": 0}
# A nuisance factor counts in "unchanged nuisances" only when the classifier reads it this well
# on real test pictures; below that, a mismatch would say more about the instrument.
RELIABLE = 0.9


@dataclass(frozen=True)
class Head:
    """One factor the classifier reads: its name, kind and the raw values of each class."""

    factor: str
    kind: str  # "entity" (classes are the factor's bins) or "nuisance" (raw values used)
    members: tuple  # class c covers raw indices members[c] (a tuple of ints)


def heads_of(data: Data, nuisances: dict) -> list[Head]:
    """Entity factors (one class per bin), then nuisance factors that take several values."""
    space = data.space
    heads = [Head(name, "entity", tuple(tuple(b) for b in space.bins[name]))
             for name in space.entity_factors]
    heads += [Head(name, "nuisance", tuple((v,) for v in sorted(values)))
              for name, values in nuisances.items() if len(values) > 1]
    return heads


def targets(data: Data, split: str, heads: list[Head]) -> torch.Tensor:
    """(n, H) class index of every picture of `split` for every head."""
    classes = data.classes[split]
    cols = []
    for head in heads:
        column = classes[:, data.space.factor_names.index(head.factor)]
        lookup = torch.full((data.space.factor_sizes[data.space.factor_names.index(head.factor)],),
                            -1, dtype=torch.long, device=column.device)
        for c, members in enumerate(head.members):
            lookup[list(members)] = c
        cols.append(lookup[column])
    return torch.stack(cols, dim=1)


class FactorClassifier(nn.Module):
    """pictures (B, C, 64, 64) in [0, 1] -> one logit vector per head."""

    def __init__(self, in_channels: int, head_sizes: list[int], channels: list[int], hidden: int):
        super().__init__()
        widths = [in_channels, *channels]
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.BatchNorm2d(c_out),
                       nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels[-1] * 16, hidden),
                                  nn.ReLU())
        self.out = nn.Linear(hidden, sum(head_sizes))
        self.head_sizes = list(head_sizes)

    def forward(self, x):
        return self.out(self.body(x)).split(self.head_sizes, dim=1)

    @torch.no_grad()
    def predict(self, pictures, chunk: int = 1024) -> torch.Tensor:
        """(N, C, 64, 64) -> (N, H) predicted class of every head."""
        self.eval()
        out = [torch.stack([h.argmax(1) for h in self(pictures[i:i + chunk])], dim=1)
               for i in range(0, len(pictures), chunk)]
        return torch.cat(out) if out else torch.zeros(0, len(self.head_sizes), dtype=torch.long)


def soften(x, generator):
    """Blur a random half of the batch with a 3x3 box filter (decoded pictures are soft)."""
    channels = x.shape[1]
    kernel = torch.full((channels, 1, 3, 3), 1 / 9, device=x.device)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)
    pick = torch.rand(len(x), 1, 1, 1, generator=generator, device="cpu").to(x.device) < 0.5
    return torch.where(pick, blurred, x)


def _fingerprint(data: Data, heads: list[Head], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps({"version": VERSION, "settings": settings,
                                        "heads": [h.__dict__ for h in heads]},
                                       sort_keys=True).encode())
    for split in ("train", "test"):
        digest.update(data.images[split].cpu().numpy().tobytes())
        digest.update(data.classes[split].cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def accuracy(clf: FactorClassifier, data: Data, split: str, heads: list[Head]) -> dict:
    """Per-head accuracy and the entity accuracy (all entity heads right) on real pictures."""
    pred = torch.cat([clf.predict(x) for x in data.chunks(split)])
    truth = targets(data, split, heads)
    right = pred == truth
    out = {h.factor: float(right[:, i].float().mean()) for i, h in enumerate(heads)}
    entity_cols = [i for i, h in enumerate(heads) if h.kind == "entity"]
    out["entity"] = float(right[:, entity_cols].all(dim=1).float().mean())
    return out


def load_or_train(data: Data, nuisances: dict, cache_dir: Path, name: str,
                  settings: dict = SETTINGS) -> tuple[FactorClassifier, list[Head], dict]:
    """The cached classifier for these pictures, trained first if there is none.

    Returns (classifier in eval mode on the data's device, heads, test accuracy per head)."""
    heads = heads_of(data, nuisances)
    path = Path(cache_dir) / "classifiers" / f"{name}-{_fingerprint(data, heads, settings)}.pt"
    device = data.images["train"].device
    # seeded here, so the instrument is the same whichever process trains it (a finished run,
    # or --evaluate of a stopped one), and the caller's random state is left as it was
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings["seed"])
        clf = FactorClassifier(data.channels, [len(h.members) for h in heads],
                               settings["channels"], settings["hidden"]).to(device)
        if path.exists():
            saved = load_checkpoint(path, map_location=device)
            clf.load_state_dict(saved["weights"])
            return clf.eval(), heads, saved["test_accuracy"]
        fit(clf, data, heads, settings)
    test_acc = accuracy(clf, data, "test", heads)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"weights": clf.state_dict(), "test_accuracy": test_acc,
                     "heads": [h.__dict__ for h in heads], "settings": settings}, path)
    return clf.eval(), heads, test_acc


def fit(clf, data: Data, heads: list[Head], settings: dict, augment=soften) -> None:
    """Train clf on every training picture of data: settings["steps"] Adam steps, each on
    augment(batch, generator) (soften: a random half blurred)."""
    torch.manual_seed(settings["seed"])
    generator = torch.Generator().manual_seed(settings["seed"])
    truth = targets(data, "train", heads)
    opt = torch.optim.Adam(clf.parameters(), lr=settings["lr"])
    # cosine decay to zero: the last steps settle instead of rattling around the optimum
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings["steps"])
    clf.train()
    n, size = len(data.images["train"]), min(settings["batch_size"], len(truth))
    order = []
    for _ in tqdm(range(settings["steps"]), desc="factor classifier", leave=False,
                  file=sys.stderr, disable=not sys.stderr.isatty()):
        if not order:  # a fixed number of steps, whatever the subset's size
            order = batches(n, size, truth.device, generator=generator)
        idx = order.pop()
        logits = clf(augment(data.batch("train", idx), generator))
        loss = sum(F.cross_entropy(h, truth[idx, i]) for i, h in enumerate(logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    clf.eval()


def entity_of(pred: torch.Tensor, heads: list[Head], bin_counts) -> torch.Tensor:
    """(N, H) predicted classes -> (N,) entity ids (mixed radix of the entity heads' bins)."""
    ids = torch.zeros(len(pred), dtype=torch.long, device=pred.device)
    entity_cols = [i for i, h in enumerate(heads) if h.kind == "entity"]
    for col, count in zip(entity_cols, bin_counts):
        ids = ids * count + pred[:, col]
    return ids


def reliable_nuisances(heads: list[Head], test_acc: dict) -> list[int]:
    """Columns of the nuisance heads the classifier reads well enough to judge 'unchanged'."""
    return [i for i, h in enumerate(heads)
            if h.kind == "nuisance" and test_acc[h.factor] >= RELIABLE]


def describe(heads: list[Head], test_acc: dict) -> list[str]:
    return [f"{h.factor} ({h.kind}, {len(h.members)} classes): test acc {test_acc[h.factor]:.3f}"
            for h in heads]

