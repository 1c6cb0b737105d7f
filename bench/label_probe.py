"""What a labelled budget can teach on its own: the factor classifier's network trained on the
labelled training images alone (no unlabelled image, no autoencoder), scored on the test split.

    python bench/label_probe.py mpi3d --per-entity 5 --shift 12
    python bench/label_probe.py shapes3d --per-entity 5 10 20 --shift 0 4 data.labelled_shift=0

One line per (budget, shift): the test accuracy of every entity factor and of the whole entity.
A budget under which this stays near chance gives the relational phase nothing to organise
the codes with; an input augmentation that raises it (a move, `--shift`, for a factor that
does not depend on where the object stands) is worth trying on the labelled inputs of
training (`data.labelled_shift`). Trailing `key=value` overrides go to the dataset's config.
"""

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import classifier  # noqa: E402
from common import config as configlib  # noqa: E402
from common.augment import mirror, shift  # noqa: E402


def probe(dataset: str, per_entity: int, pixels: int, steps: int, overrides: list[str],
          preset: str | None = None) -> dict:
    """The test accuracies (and the number of labelled images) of one probe."""
    config = importlib.import_module(f"{dataset}.config")
    data_module = importlib.import_module(f"{dataset}.dataset")
    cfg = configlib.resolve(config.CONFIG, config.PRESETS, preset,
                            [f"data.labelled_per_entity={per_entity}", *overrides])
    config.validate(cfg)
    data = data_module.load_data(cfg, torch.device("cpu"), REPO)
    for split in (data.images, data.classes, data.entities):  # the training split: labelled only
        split["train"] = split["train"][data.labelled]
    heads = [h for h in classifier.heads_of(data, {}) if h.kind == "entity"]
    settings = dict(classifier.SETTINGS, steps=steps)

    def augment(x, generator):  # what training does to labelled inputs, then the blur
        x = shift(mirror(x, cfg["data"]["labelled_mirror_prob"]), pixels)
        return classifier.soften(x, generator)

    torch.manual_seed(settings["seed"])
    net = classifier.FactorClassifier(data.channels, [len(h.members) for h in heads],
                                      settings["channels"], settings["hidden"])
    classifier.fit(net, data, heads, settings, augment)
    return {"labelled": len(data.labelled), **classifier.accuracy(net, data, "test", heads)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a dataset folder: dsprites, shapes3d, mpi3d")
    parser.add_argument("--per-entity", type=int, nargs="+", default=[5])
    parser.add_argument("--shift", type=int, nargs="+", default=[0],
                        help="labelled inputs moved by up to this many pixels each way")
    parser.add_argument("--steps", type=int, default=classifier.SETTINGS["steps"])
    parser.add_argument("--preset", help="a preset of the dataset's config, as train.py's")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_intermixed_args(argv)
    for per_entity in args.per_entity:
        for pixels in args.shift:
            start = time.perf_counter()
            scores = probe(args.dataset, per_entity, pixels, args.steps, args.overrides,
                           args.preset)
            factors = " ".join(f"{k} {v:.3f}" for k, v in scores.items() if k != "labelled")
            print(f"{args.dataset} {per_entity:>3} per entity ({scores['labelled']} labelled), "
                  f"shift {pixels:>2}: {factors} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
