"""Per-rank model-state memory (parameters + gradients + optimizer state + the engine's buffers), measured.

Run one launch per strategy with the same script; each prints one JSON line per rank:
    torchrun --nproc_per_node 2 benchmarks/zero_memory.py --label ddp            # plain DDP (gloo on CPU)
    accelerate launch --config_file accelerate_configs/cpu_2proc_zero2.yaml benchmarks/zero_memory.py --label zero2
    accelerate launch --config_file accelerate_configs/cpu_2proc_zero3.yaml benchmarks/zero_memory.py --label zero3
(benchmarks/zero_memory.sh runs all three and writes benchmarks/results/zero_memory.json.)

"Measured" means: after the backward of a second real step (gradients held, Adam state present, activations
freed) on a synthetic batch, every tensor alive in the process is found
through the garbage collector and its storage counted once. That includes what a strategy really keeps (bf16
copies, fp32 masters, Adam moments, DeepSpeed's flat and bucket buffers), not a formula. DeepSpeed's own
estimator for the same parameter count is printed next to it.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from violet.config import RunConfig  # noqa: E402
from violet.engine.optim import build_optimizer  # noqa: E402
from violet.models import VideoLanguageModel, preset  # noqa: E402
from violet.runtime import build_accelerator  # noqa: E402

BERT_VOCAB = 30522


def surface_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list:
    """Tensors autograd created in C++ (gradients) have no Python object until touched; touch them so the
    garbage-collector scan sees them (the list keeps them alive for the scan)."""
    held = [p.grad for p in model.parameters() if p.grad is not None]
    inner = getattr(optimizer, "optimizer", optimizer)
    inner = getattr(inner, "optimizer", inner)  # Accelerate wrapper -> DeepSpeed ZeRO optimizer -> torch Adam
    for group in inner.param_groups:
        held.extend(p for p in group["params"])
        held.extend(p.grad for p in group["params"] if p.grad is not None)
    return held


def live_tensor_bytes() -> int:
    """Bytes of every distinct tensor storage reachable from Python objects."""
    gc.collect()
    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        try:
            if not isinstance(obj, torch.Tensor) or obj.device.type == "meta":
                continue
            storage = obj.untyped_storage()
        except (RuntimeError, ReferenceError):
            continue
        if storage.nbytes():
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def synthetic_step(model: torch.nn.Module, config: RunConfig, device: torch.device) -> torch.Tensor:
    """One batch touching every head the retrieval model has (video, text, fusion passes)."""
    m = config.model
    frames = torch.randint(0, 255, (1, m.tubelet * 2, 3, m.image_size, m.image_size), dtype=torch.uint8, device=device)
    ids = torch.randint(1000, 2000, (1, 16), device=device)
    mask = torch.ones_like(ids)
    video = model("video", frames=frames)
    text = model("text", ids=ids, mask=mask)
    fused = model("fusion", text_tokens=text["tokens"], text_mask=mask, video_tokens=video["tokens"])
    return ((video["embed"] * text["embed"]).sum() * video["logit_scale"].sum()
            + fused["vtm_logits"].float().sum())


def deepspeed_estimate(stage: int, params: int, largest_layer: int, world: int) -> float | None:
    """DeepSpeed's estimator (bytes per device for model states) for the same model, if it applies."""
    if stage == 2:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        _, device_bytes = estimate_zero2_model_states_mem_needs(params, num_gpus_per_node=world, num_nodes=1,
                                                                cpu_offload=False)
        return device_bytes
    if stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        _, device_bytes, _ = estimate_zero3_model_states_mem_needs(params, largest_layer, num_gpus_per_node=world,
                                                                   num_nodes=1, cpu_offload=False,
                                                                   cpu_offload_params=False, zero_init=False)
        return device_bytes
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", required=True)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--precision", default="bf16")
    args = parser.parse_args()

    config = RunConfig()
    config.model = preset(args.preset)
    config.train.batch_size = 1
    config.train.mixed_precision = args.precision
    accelerator = build_accelerator(config, project_dir=None, log_with=None)
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:  # no DataLoader is prepared, so fill DeepSpeed's "auto" batch fields here
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1
    torch.manual_seed(0)
    model = VideoLanguageModel(config.model, BERT_VOCAB, heads=("vtc", "vtm"))
    params = sum(p.numel() for p in model.parameters())
    largest_layer = max(p.numel() for p in model.parameters())
    optimizer = build_optimizer(model, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    before = live_tensor_bytes()
    for step in range(2):  # the first step creates the optimizer state; measure in the second
        with accelerator.autocast():
            loss = synthetic_step(model, config, accelerator.device)
        accelerator.backward(loss)
        del loss
        if step == 1:  # gradients reduced and held, optimizer state present, activations freed
            held = surface_tensors(model, optimizer)
            measured = live_tensor_bytes()
            del held
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    stage = plugin.zero_stage if plugin is not None else 0
    estimate = deepspeed_estimate(stage, params, largest_layer, accelerator.num_processes)
    record = {
        "label": args.label, "rank": accelerator.process_index, "world": accelerator.num_processes,
        "preset": args.preset, "params_m": round(params / 1e6, 2), "zero_stage": stage,
        "precision": accelerator.mixed_precision,
        "model_states_gib": round(measured / 2**30, 3), "after_prepare_gib": round(before / 2**30, 3),
        "bytes_per_param": round(measured / params, 2),
        "deepspeed_estimate_gib": None if estimate is None else round(estimate / 2**30, 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")),
    }
    print("ZERO_MEMORY " + json.dumps(record), flush=True)
    accelerator.end_training()


if __name__ == "__main__":
    main()
