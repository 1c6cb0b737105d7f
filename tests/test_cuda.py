"""What only a GPU can check, skipped where CUDA is absent (bench/gpu_check.sh runs them on
one): each folder's tiny run on CUDA in bf16 with torch.compile and channels-last, the mixture
maths on CUDA against the CPU, and training steps that never wait for the host."""

import json

import pytest
import torch

from common import gmm, runtime
from tests.scripts import FOLDERS, REPO, module, run, tiny, tiny_config

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs CUDA (bench/gpu_check.sh runs these on a GPU)")]
D64 = torch.float64


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_tiny_cuda_run_in_bf16_with_compile_finishes_with_finite_metrics(tmp_path, folder):
    result = run(folder, [*tiny(tmp_path, "gpu", epochs=(1, 1)), "run.device=cuda",
                          "train.amp=bf16", "train.compile=default", "train.channels_last=true"],
                 timeout=600)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "runs" / "gpu" / "metrics.json").read_text())
    assert 0 < metrics["test/recon_loss"] < 1e5
    assert 0 <= metrics["test/cluster_acc@0.99"] <= 1 and 0 <= metrics["test/dci_completeness"] <= 1
    checkpoint = torch.load(tmp_path / "runs" / "gpu" / "checkpoint.pt", map_location="cpu",
                            weights_only=True)
    assert not any("_orig_mod" in k for k in checkpoint["model"])  # loads uncompiled, on a CPU


def test_mixture_maths_on_cuda_equal_the_cpu():
    torch.manual_seed(0)
    means = torch.randn(12, 6, dtype=D64)
    spread = torch.randn(12, 6, 6, dtype=D64)
    chol = torch.linalg.cholesky(spread @ spread.transpose(1, 2) + 0.1 * torch.eye(6, dtype=D64))
    z = 2 * torch.randn(4000, 6, dtype=D64)
    on_cpu = gmm.mahalanobis_sq(z, means, chol)
    on_gpu = gmm.mahalanobis_sq(z.cuda(), means.cuda(), chol.cuda()).cpu()
    assert torch.allclose(on_cpu, on_gpu, rtol=1e-10, atol=1e-10)
    assert torch.equal(gmm.classify(z, means, chol, 0.99)[0],
                       gmm.classify(z.cuda(), means.cuda(), chol.cuda(), 0.99)[0].cpu())


@pytest.mark.parametrize("folder", FOLDERS)
def test_training_steps_never_wait_for_the_host(tmp_path, folder):
    """torch's sync debug mode raises on any device-to-host synchronisation (.item(), a
    data-dependent shape, a CPU read): the warm-up, relational and ReL steps have none."""
    train = module(folder, "train")
    cfg = tiny_config(folder, tmp_path, "run.device=cuda", "train.amp=bf16")
    _, device = runtime.setup(cfg)
    data = train.dataset.load_data(cfg, device, REPO)
    state = train.build_state(cfg, data, device)
    batch = torch.arange(cfg["train"]["batch_size"], device=device)
    for _ in range(2):  # the first call of each step may allocate; the second is the steady state
        train.warmup_step(state, data, batch, cfg)
    train.init_adaptive_prior(state, data, cfg)
    train.relational_step(state, data, batch, cfg)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train.warmup_step(state, data, batch, cfg)
        train.relational_step(state, data, batch, cfg)
        train.rel_step(state, data.space, cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
