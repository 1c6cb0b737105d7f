"""model.norm: batch normalisation after every convolution of the encoder and decoder but the
decoder's last, in every folder's model.py; "none" keeps the networks (and their checkpoint
keys) as they were."""

import copy
import json

import pytest
import torch
from torch import nn

from tests.scripts import FOLDERS, module, run, tiny

pytestmark = pytest.mark.runs  # trains whole runs: scheduled first (tests/conftest.py)

# the state_dict keys of the networks before model.norm existed: old checkpoints must load
ENCODER_KEYS = [f"net.{i}.{p}" for i in (0, 2, 4, 6, 9, 11) for p in ("weight", "bias")]
DECODER_KEYS = [f"net.{i}.{p}" for i in (0, 2, 5, 7, 9, 11) for p in ("weight", "bias")]


def _networks(folder, norm):
    cfg = copy.deepcopy(module(folder, "config").CONFIG)
    cfg["model"]["norm"] = norm
    space = module(folder, "dataset").entity_space(cfg)
    torch.manual_seed(0)
    model, _ = module(folder, "model").build(cfg, space)
    return model, cfg


@pytest.mark.parametrize("folder", FOLDERS)
def test_norm_none_keeps_the_networks_as_they_were(folder):
    model, _ = _networks(folder, "none")
    assert list(model.encoder.state_dict()) == ENCODER_KEYS
    assert list(model.decoder.state_dict()) == DECODER_KEYS
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("folder", FOLDERS)
def test_norm_batch_normalises_every_convolution_but_the_logits(folder):
    model, cfg = _networks(folder, "batch")
    for net in (model.encoder.net, model.decoder.net):
        layers = list(net)
        convs = [i for i, m in enumerate(layers) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        assert len(convs) == 4
        for i in convs[:-1] if net is model.decoder.net else convs:
            assert isinstance(layers[i + 1], nn.BatchNorm2d)
            assert layers[i + 1].num_features == layers[i].out_channels
            assert isinstance(layers[i + 2], nn.ReLU)
    logits = model.decoder.net[-1]  # the decoder ends on its last convolution: no norm, no ReLU
    assert isinstance(logits, nn.ConvTranspose2d) and isinstance(model.decoder.net[-2], nn.ReLU)
    # a training batch of codes is decoded to normalised features; eval mode uses the running
    # statistics, so one picture decodes alike alone or in a batch
    z = torch.randn(8, cfg["model"]["z_dim"]) * 3
    model.train()
    model.decoder(z)
    model.eval()
    with torch.no_grad():
        alone, batch = model.decoder(z[:1]), model.decoder(z)[:1]
    assert torch.allclose(alone, batch, atol=1e-5)


@pytest.mark.parametrize("folder", FOLDERS)
def test_norm_is_checked(folder):
    config = module(folder, "config")
    cfg = copy.deepcopy(config.CONFIG)
    cfg["model"]["norm"] = "layer"
    with pytest.raises(Exception, match="model.norm must be one of none, batch, got 'layer'"):
        config.validate(cfg)


def test_a_batch_normalised_run_trains_and_its_evaluation_is_repeatable(tmp_path):
    result = run("mpi3d", tiny(tmp_path, "bn") + ["model.norm=batch"])
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "runs" / "bn"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert "decoder.net.6.running_mean" in ckpt["model"]  # the first deconvolution's norm
    assert ckpt["model"]["decoder.net.6.num_batches_tracked"] > 0
    again = run("mpi3d", ["--evaluate", str(run_dir)])
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
