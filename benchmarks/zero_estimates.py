"""DeepSpeed's own estimates of per-GPU model-state memory (parameters, gradients, Adam state) for every preset.

    python benchmarks/zero_estimates.py [--presets base ...] [--gpus 1 8 16 64]

Models are built on the meta device, so this is instant and needs no memory. Prints a markdown table (used in
docs/scaling.md). Activations come on top and depend on batch size, frames and gradient checkpointing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from violet.models import PRESETS, VideoLanguageModel, preset  # noqa: E402

BERT_VOCAB = 30522
PRETRAIN_HEADS = ("vtc", "vtm", "mlm", "mvm")


def parameter_counts(name: str) -> tuple[int, int]:
    """(total parameters, largest single parameter) of the pretraining model of a preset."""
    with torch.device("meta"):
        model = VideoLanguageModel(preset(name), BERT_VOCAB, PRETRAIN_HEADS)
    sizes = [p.numel() for p in model.parameters()]
    return sum(sizes), max(sizes)


def estimates(total: int, largest: int, gpus: int) -> dict[str, float]:
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    nodes, per_node = max(1, gpus // 8), min(gpus, 8)
    gib = 2**30
    return {
        # DDP with bf16 autocast keeps fp32 weights, fp32 gradients and two fp32 Adam moments: 16 bytes/param.
        "ddp": 16 * total / gib,
        "zero2": estimate_zero2_model_states_mem_needs(total, per_node, nodes, cpu_offload=False)[1] / gib,
        "zero3": estimate_zero3_model_states_mem_needs(total, largest, per_node, nodes, cpu_offload=False,
                                                       cpu_offload_params=False, zero_init=False)[1] / gib,
        "zero3_offload": estimate_zero3_model_states_mem_needs(total, largest, per_node, nodes, cpu_offload=True,
                                                               cpu_offload_params=True, zero_init=False)[1] / gib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="*", default=[name for name in PRESETS if "tiny" not in name])
    parser.add_argument("--gpus", nargs="*", type=int, default=[1, 8, 16, 64])
    args = parser.parse_args()
    print("| preset | params | GPUs | DDP | ZeRO-2 | ZeRO-3 | ZeRO-3 + offload |")
    print("|---|---|---|---|---|---|---|")
    for name in args.presets:
        total, largest = parameter_counts(name)
        for gpus in args.gpus:
            row = estimates(total, largest, gpus)
            cells = " | ".join(f"{row[key]:.2f} GiB" for key in ("ddp", "zero2", "zero3", "zero3_offload"))
            print(f"| {name} | {total / 1e6:.1f} M | {gpus} | {cells} |")


if __name__ == "__main__":
    main()
