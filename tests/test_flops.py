"""FLOP counting and MFU: the counter's total for one transformer block matches a hand count, peaks come from the
datasheet table for known GPUs, and the efficiency scalars are the arithmetic they claim."""
from __future__ import annotations

import pytest
import torch

from violet.config import ModelConfig
from violet.engine.efficiency import Efficiency, batch_tokens, count_flops, measured_peak, table_peak
from violet.models.transformer import Block


def block_flops_by_hand(batch: int, length: int, width: int, mlp_ratio: float) -> int:
    """Forward: qkv (3 D^2), proj (D^2), MLP (2 x ratio D^2) per token at 2 FLOPs a multiply-add, plus scores
    Q K^T and the weighted sum of V (L^2 D each). Backward: twice the forward (grads of inputs and weights)."""
    tokens = batch * length
    linear = 2 * tokens * width * width * (3 + 1 + 2 * mlp_ratio)
    attention = 2 * 2 * batch * length * length * width
    return int(3 * (linear + attention))


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_one_block_forward_and_backward_matches_the_hand_count(norm_first, masked):
    batch, length, width, heads = 2, 96, 64, 4
    block = Block(width, heads, 4.0, 0.0, norm_first)
    x = torch.randn(batch, length, width, requires_grad=True)
    mask = torch.ones(batch, length, dtype=torch.bool) if masked else None
    counted = count_flops(lambda: block(x, mask).sum().backward())
    expected = block_flops_by_hand(batch, length, width, 4.0)
    assert counted == pytest.approx(expected, rel=0.10)
    # attention is in the count (on CPU it runs a kernel FlopCounterMode does not know by itself)
    without_attention = 3 * 2 * batch * length * width * width * (3 + 1 + 8)
    assert counted > without_attention * 1.05


@pytest.mark.parametrize("name, precision, tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989), ("NVIDIA H100 PCIe", "bf16", 756), ("NVIDIA H200", "bf16", 989),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312), ("NVIDIA A100-SXM4-40GB", "no", 19.5), ("NVIDIA H200", "fp16", 989),
])
def test_peaks_of_known_gpus(name, precision, tflops):
    assert table_peak(name, precision) == pytest.approx(tflops * 1e12)


def test_unknown_devices_are_measured():
    assert table_peak("NVIDIA GeForce GTX 1080", "bf16") is None
    state = torch.get_rng_state()
    peak = measured_peak(torch.device("cpu"), "no", seconds=0.05, size=256)
    assert 1e8 < peak < 1e14
    assert torch.equal(state, torch.get_rng_state())  # the training random stream is untouched


def test_efficiency_scalars():
    efficiency = Efficiency(peak=1e12, num_processes=2)
    batch = {"frames": torch.zeros(4, 8, 3, 32, 32, dtype=torch.uint8)}
    with efficiency.counting(batch):
        torch.mm(torch.ones(10, 20), torch.ones(20, 30))  # 2 * 10 * 20 * 30 FLOPs
    assert efficiency.flops_per_clip == 2 * 10 * 20 * 30 / 4
    with efficiency.counting(batch):  # counted once only
        torch.mm(torch.ones(100, 100), torch.ones(100, 100))
    assert efficiency.flops_per_clip == 3000
    logs = efficiency.logs(clips=800, tokens=1e4, elapsed=2.0)  # 400 clips per device in 2 s
    assert logs["perf/tflops_per_device"] == pytest.approx(3000 * 400 / 2 / 1e12)
    assert logs["perf/mfu"] == pytest.approx(3000 * 400 / 2 / 1e12)
    assert logs["perf/tokens_per_s"] == 5e3


def test_batch_tokens_count_the_video_grid_and_real_words():
    config = ModelConfig(image_size=32, patch_size=8, tubelet=2)
    batch = {"frames": torch.zeros(3, 8, 3, 32, 32, dtype=torch.uint8),
             "text_mask": torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])}
    assert int(batch_tokens(batch, config)) == 3 * 4 * 16 + 6
