"""How well a run uses its hardware: clips/s, tokens/s, achieved TFLOP/s and MFU (model FLOPs utilisation).

The FLOPs of one training step are counted once, with `torch.utils.flop_counter.FlopCounterMode`, around the
forward and backward of the first micro-batch the process trains on (no extra step: the counted one is a real
step, so no RNG draw or batch changes). The count includes what backward recomputes under activation
checkpointing. Achieved FLOP/s = FLOPs per clip x clips per second per device; MFU divides it by the device's
peak: a table of dense bf16/fp16 (and fp32) peaks for known GPUs, matched by `torch.cuda.get_device_name`, and
otherwise (CPU, unknown GPUs) the matmul rate measured at start, which makes MFU there "share of the best matmul
rate this machine reached", not of a datasheet number.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from violet.config import ModelConfig

# Dense (no sparsity) peak TFLOP/s per device: (bf16/fp16 tensor cores, fp32 without TF32). The first name found
# in `torch.cuda.get_device_name()` wins, so more specific names come first.
PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989.0, 67.0),
    ("H100 PCIe", 756.0, 51.0),
    ("H100", 989.0, 67.0),  # SXM
    ("A100", 312.0, 19.5),
)


# FlopCounterMode knows the CUDA attention kernels; on CPU, scaled_dot_product_attention runs this one.
def _cpu_flash_attention(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_attention_backward(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
                                  **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


EXTRA_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_attention_backward,
}


def flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)


def count_flops(run: Callable[[], Any]) -> int:
    """FLOPs (multiply-add = 2) of the matrix products, convolutions and attention `run()` executes."""
    with flop_counter() as counter:
        run()
    return counter.get_total_flops()


def table_peak(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s of a known GPU at the run's precision (mixed_precision "bf16"/"fp16" or "no"), else None."""
    for name, low_precision, fp32 in PEAK_TFLOPS:
        if name.lower() in device_name.lower():
            return 1e12 * (fp32 if precision == "no" else low_precision)
    return None


def measured_peak(device: torch.device, precision: str, seconds: float = 0.3, size: int = 1024) -> float:
    """The best matmul rate (FLOP/s) of `size`-square matrices in the run's compute dtype, within ~`seconds`."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # fp16 matmul on CPU is an emulation no run uses
    generator = torch.Generator(device=device).manual_seed(0)  # never the global stream: training owns it
    a = torch.randn(size, size, device=device, generator=generator).to(dtype)
    b = torch.randn(size, size, device=device, generator=generator).to(dtype)
    best, deadline = 0.0, time.perf_counter() + seconds
    while True:
        sync(device)
        start = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        sync(device)
        elapsed = time.perf_counter() - start
        best = max(best, 4 * 2 * size ** 3 / max(elapsed, 1e-9))
        if time.perf_counter() > deadline:
            return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak FLOP/s per device, where the number comes from)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = table_peak(name, precision)
        if peak is not None:
            return peak, f"{name} datasheet ({'fp32' if precision == 'no' else precision} dense)"
        return measured_peak(device, precision), f"{name} measured matmul"
    return measured_peak(device, precision), f"{device.type} measured matmul"


def batch_tokens(batch: dict[str, Any], model: ModelConfig) -> Any:
    """Tokens a batch feeds the model: video tokens of the full grid (the encoder's input before any masking)
    plus the real (unpadded) text tokens. A tensor when the text part is one, so no device sync happens here."""
    frames = batch["frames"]
    grid = (model.image_size // model.video_region) ** 2
    video = frames.shape[0] * math.ceil(frames.shape[1] / model.tubelet) * grid
    mask = batch.get("text_mask")
    return video + (mask.sum() if isinstance(mask, torch.Tensor) else 0)


class Efficiency:
    """Counts the FLOPs of the first micro-batch once, then turns window counts into efficiency scalars."""

    def __init__(self, peak: float | None, num_processes: int) -> None:
        self.peak = peak  # FLOP/s per device; None: no MFU (e.g. a process that never logs)
        self.num_processes = num_processes
        self.flops_per_clip: float | None = None

    @contextlib.contextmanager
    def counting(self, batch: dict[str, Any]) -> Iterator[None]:
        """Count the FLOPs of what runs inside, the first time only (later calls cost nothing)."""
        if self.flops_per_clip is not None or "frames" not in batch:
            yield
            return
        with flop_counter() as counter:
            yield
        self.flops_per_clip = counter.get_total_flops() / max(1, batch["frames"].shape[0])

    def logs(self, clips: int, tokens: float, elapsed: float) -> dict[str, float]:
        """Scalars of a log window: `clips` and `tokens` over all processes, `elapsed` wall seconds."""
        elapsed = max(elapsed, 1e-9)
        logs = {"perf/tokens_per_s": float(tokens) / elapsed}
        if self.flops_per_clip is None:
            return logs
        achieved = self.flops_per_clip * clips / self.num_processes / elapsed  # per device
        logs["perf/tflops_per_device"] = achieved / 1e12
        if self.peak:
            logs["perf/mfu"] = achieved / self.peak
        return logs
