"""Per-rank memory right after building the model: whole (then partitioned by the engine) vs built partitioned
under ZeRO-3 (`deepspeed.zero.Init`, what train.py does with zero3_init_flag: true), and loading saved weights
into the partitioned model.

    accelerate launch --config_file accelerate_configs/cpu_2proc_zero3.yaml benchmarks/zero3_construction.py \
        [--preset base] [--precision bf16]

Each rank measures every live tensor storage (benchmarks/zero_memory.py's garbage-collector scan) before and after
each construction, in this order: the whole model (its weights are saved for the loading check, then it is
deleted), then the partitioned one, then `load_weights` of the saved file into the partitioned model. Rank 0 then
gathers a few parameters and compares them with the saved file. Prints one JSON object (rank 0) with the
per-rank figures and `ratio` = partitioned / whole (goal <= 0.55 at 2 ranks).
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from zero_memory import BERT_VOCAB, live_tensor_bytes  # noqa: E402

from violet.config import RunConfig  # noqa: E402
from violet.engine.construction import sharded_construction  # noqa: E402
from violet.engine.weights import WEIGHTS, load_weights  # noqa: E402
from violet.models import VideoLanguageModel, preset  # noqa: E402
from violet.models.presets import PRETRAIN_HEADS  # noqa: E402
from violet.runtime import build_accelerator  # noqa: E402

CHECKED = ("text.embeddings.word_embeddings.weight", "fusion.blocks.0.attn.qkv.weight", "heads.vtc.logit_scale")


def build(config: RunConfig) -> VideoLanguageModel:
    torch.manual_seed(0)
    return VideoLanguageModel(config.model, BERT_VOCAB, PRETRAIN_HEADS)


def gathered_values(model: torch.nn.Module, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    import deepspeed

    parameters = dict(model.named_parameters())
    with deepspeed.zero.GatheredParameters([parameters[name] for name in names]):
        return {name: parameters[name].detach().clone().float() for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--precision", default="bf16")
    args = parser.parse_args()
    config = RunConfig()
    config.model = preset(args.preset)
    config.train.batch_size, config.train.mixed_precision = 1, args.precision
    accelerator = build_accelerator(config, project_dir=None, log_with=None)
    if accelerator.state.deepspeed_plugin is None or accelerator.state.deepspeed_plugin.zero_stage != 3:
        raise SystemExit("launch with a ZeRO-3 config, e.g. accelerate_configs/cpu_2proc_zero3.yaml")
    folder = Path(tempfile.mkdtemp(prefix="zero3_construction_")) if accelerator.is_main_process else None
    shared = [str(folder)]
    dist.broadcast_object_list(shared)
    folder = Path(shared[0])

    base = live_tensor_bytes()
    whole = build(config)
    whole_bytes = live_tensor_bytes() - base
    params = sum(p.numel() for p in whole.parameters())
    if accelerator.is_main_process:
        save_file({k: v.contiguous() for k, v in whole.state_dict().items() if k != "heads.mlm.decoder.weight"},
                  str(folder / WEIGHTS))
    saved = {name: dict(whole.named_parameters())[name].detach().clone().float() for name in CHECKED}
    del whole
    gc.collect()
    accelerator.wait_for_everyone()

    base = live_tensor_bytes()
    with sharded_construction(accelerator, config):
        sharded = build(config)
    sharded_bytes = live_tensor_bytes() - base
    same_init = all(torch.equal(value.to(saved[name].dtype), saved[name]) if args.precision == "no" else
                    torch.allclose(value, saved[name], rtol=1e-2, atol=1e-2)
                    for name, value in gathered_values(sharded, CHECKED).items())
    for parameter in sharded.parameters():  # so that loading has something to change
        parameter.ds_tensor.data.zero_()
    load_weights(sharded, folder)
    loaded_bytes = live_tensor_bytes() - base
    loaded = gathered_values(sharded, CHECKED)
    loads_exactly = all(torch.allclose(loaded[name], saved[name].to(loaded[name].dtype).float(), rtol=1e-2, atol=1e-2)
                        for name in CHECKED)
    record = {"rank": accelerator.process_index, "whole_mib": round(whole_bytes / 2**20, 1),
              "sharded_mib": round(sharded_bytes / 2**20, 1), "after_loading_mib": round(loaded_bytes / 2**20, 1)}
    records = [None] * accelerator.num_processes
    dist.all_gather_object(records, record)
    if accelerator.is_main_process:
        print(json.dumps({
            "preset": args.preset, "params_m": round(params / 1e6, 2), "world": accelerator.num_processes,
            "precision": accelerator.mixed_precision, "per_rank": records,
            "ratio": round(max(r["sharded_mib"] for r in records) / max(r["whole_mib"] for r in records), 3),
            "same_initial_values": same_init, "loaded_values_match": loads_exactly,
        }))
        (folder / WEIGHTS).unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
