"""Forward + backward of one pretraining step of each base preset at batch 1 on this machine; prints JSON.

`python benchmarks/model_fwd_bwd.py` runs every preset below in its own process (so peak RSS is per preset);
`--preset NAME` runs one. The step is the pretraining step's model work: the (masked) video pass, text pass,
the joint MLM + MVM pass (SimVTP: 90 % tube masking, encoder on visible tubes, MAE decoder) and a VTM pass,
with the presets' frame counts (VIOLET 4, SimVTP 16) at 224 px.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from violet.config import ObjectiveConfig
from violet.models import (
    PRESETS,
    VideoLanguageModel,
    count_parameters,
    preset,
    preset_overrides,
)
from violet.objectives import MVMTarget, random_patch_mask, tube_mask

DEFAULT_PRESETS = ("violet-base", "violet-small", "simvtp-base")


def step(model: VideoLanguageModel, target: MVMTarget, frames: torch.Tensor, ratio: float) -> torch.Tensor:
    config = model.config
    steps = -(-frames.shape[1] // config.tubelet)
    per_step = (config.image_size // config.video_region) ** 2
    ids = torch.randint(1000, 20000, (1, config.max_text_len))
    mask = torch.ones_like(ids)
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[:, 1:7] = True
    if model.mae_style:
        hidden = tube_mask(1, steps, per_step, ratio, frames.device)
        video = model("video", frames=frames, mvm_mask=hidden)
        masked_video = video
    else:
        hidden = random_patch_mask(1, steps * per_step, ratio, frames.device)
        video = model("video", frames=frames)
        masked_video = model("video", frames=frames, mvm_mask=hidden)
    text = model("text", ids=ids, mask=mask)
    fused = model("fusion", text_tokens=text["tokens"], text_mask=mask, video_tokens=masked_video["tokens"],
                  mlm_positions=positions, mvm_positions=hidden)
    match = model("fusion", text_tokens=text["tokens"], text_mask=mask, video_tokens=video["tokens"])
    loss = F.cross_entropy(fused["mlm_logits"], ids[positions]) + target.loss(fused["mvm_pred"], frames, hidden)["mvm"]
    loss = loss + F.cross_entropy(match["vtm_logits"], torch.ones(1, dtype=torch.long))
    return loss + (1 - (video["embed"] * text["embed"]).sum()) * video["logit_scale"].squeeze()


def run_one(name: str, repeats: int) -> dict:
    torch.manual_seed(0)
    config = preset(name)
    overrides = preset_overrides(name, "pretrain")
    frames_count = overrides.get("data", {}).get("num_frames", 4)
    ratio = overrides.get("objective", {}).get("mvm_ratio", ObjectiveConfig().mvm_ratio)
    target = MVMTarget(ObjectiveConfig(), config)
    model = VideoLanguageModel(config, 30522, ("vtc", "vtm", "mlm", "mvm"), mvm_output_dim=target.output_dim).train()
    frames = torch.randint(0, 256, (1, frames_count, 3, config.image_size, config.image_size), dtype=torch.uint8)
    times = []
    for _ in range(repeats + 1):  # the first is warm-up
        start = time.perf_counter()
        step(model, target, frames, ratio).backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {
        "preset": name, "frames": frames_count, "image_size": config.image_size, "mvm_ratio": ratio,
        "parameters_m": round(count_parameters(model) / 1e6, 1), "threads": torch.get_num_threads(),
        "step_s_median": round(statistics.median(times[1:]), 2), "step_s_all": [round(t, 2) for t in times],
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.preset:
        print(json.dumps(run_one(args.preset, args.repeats)))
        return
    results = []
    for name in DEFAULT_PRESETS:
        out = subprocess.run([sys.executable, __file__, "--preset", name, "--repeats", str(args.repeats)],
                             check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
