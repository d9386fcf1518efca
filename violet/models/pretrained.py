"""Pretrained initialisation from local files (`model.video_init`, `model.text_init`), with a report of what
loaded, what the checkpoint lacked (kept random) and what it had that the model does not use.

Video checkpoints are recognised by their keys:
- `timm_vit`: a 2D timm ViT; the patch embedding is inflated over time (2D kernel / tubelet, repeated), so a
  video of identical frames gives the image model's features; 2D positions become the spatial table and the
  temporal table starts at zero.
- `videomae`: the original VideoMAE (and SimVTP) ViT, `encoder.`-prefixed pretraining or fine-tuned files
  (q_bias / v_bias, no key bias); `hf_videomae`: transformers' VideoMAEModel / VideoMAEForPreTraining files.
- `torchvision_swin3d`: torchvision's swin3d_* state dicts (the layout our Video Swin uses);
  `video_swin`: the original Video Swin (mmaction `backbone.layers.i.blocks.j`);
  `timm_swin`: a 2D timm Swin, inflated (patch kernel over time, relative-position table over time offsets).
Text checkpoints are read with `transformers.BertModel.from_pretrained(local_dir)`.

Load the files before `accelerator.prepare` (ZeRO-3 partitions parameters there).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from violet.models.sharding import load_into, tensor_shapes

logger = logging.getLogger(__name__)
_WRAPPERS = ("model", "module", "state_dict", "model_state")
_BUFFERS = ("relative_position_index", "attn_mask", "position_ids")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors / torch file (or of `model.safetensors` / `pytorch_model.bin` in a directory);
    wrapper dicts ({"model": ...}) are unwrapped. Torch files are read with weights_only=True (no pickled code)."""
    file = Path(path)
    if file.is_dir():
        found = [file / name for name in ("model.safetensors", "pytorch_model.bin") if (file / name).exists()]
        if not found:
            raise FileNotFoundError(f"{file}: no model.safetensors or pytorch_model.bin inside")
        file = found[0]
    if not file.exists():
        raise FileNotFoundError(f"pretrained weights {file} do not exist")
    state = load_file(str(file)) if file.suffix == ".safetensors" else torch.load(file, map_location="cpu",
                                                                                   weights_only=True)
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[key] for key in _WRAPPERS if isinstance(state.get(key), dict)), None)
        if inner is None:
            raise ValueError(f"{file}: no tensors found (top-level keys: {sorted(state)[:10]})")
        state = inner
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


def _strip(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def detect_video_format(state: dict[str, torch.Tensor]) -> str:
    keys = set(state)
    if any(key.startswith(("embeddings.patch_embeddings", "videomae.embeddings")) for key in keys):
        return "hf_videomae"
    state = _strip(state, ("module.", "backbone.", "encoder."))
    keys = set(state)
    patch = state.get("patch_embed.proj.weight")
    if any(key.endswith("attn.q_bias") for key in keys):
        return "videomae"
    if "features.0.0.attn.relative_position_bias_table" in keys:
        return "torchvision_swin3d"
    if "layers.0.blocks.0.attn.relative_position_bias_table" in keys and patch is not None:
        return "video_swin" if patch.ndim == 5 else "timm_swin"
    if "blocks.0.attn.qkv.weight" in keys and patch is not None:
        return "timm_vit" if patch.ndim == 4 else "videomae"
    raise ValueError("unrecognised video checkpoint: expected timm ViT/Swin, VideoMAE, torchvision Swin3D or Video "
                     f"Swin keys; first keys: {sorted(keys)[:8]}")


def inflate_patch_kernel(weight: torch.Tensor, frames: int) -> torch.Tensor:
    """2D kernel (D, 3, P, P) -> (D, 3, frames, P, P) averaged over time: identical frames give the 2D output."""
    return weight.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames


def _hf_videomae_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = _strip(state, ("videomae.",))
    out: dict[str, torch.Tensor] = {}
    renames = {"attention.output.dense": "attn.proj", "layernorm_before": "norm1", "layernorm_after": "norm2",
               "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}
    for key, value in state.items():
        if key.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
            continue
        separate_bias = re.match(r"encoder\.layer\.(\d+)\.attention\.attention\.([qv]_bias)$", key)
        if separate_bias is not None:  # how transformers stores VideoMAE's query/value biases in its files
            out[f"blocks.{separate_bias.group(1)}.attn.{separate_bias.group(2)}"] = value
            continue
        match = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", key)
        if match is None:
            out[{"layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}.get(key, key)] = value
            continue
        index, module, leaf = match.groups()
        if module.startswith("attention.attention."):
            part = module.rsplit(".", 1)[1]  # query | key | value
            out[f"blocks.{index}.attn.{part}.{leaf}"] = value
        else:
            out[f"blocks.{index}.{renames.get(module, module)}.{leaf}"] = value
    for index in {key.split(".")[1] for key in out if key.startswith("blocks.") and ".attn.query." in key}:
        prefix = f"blocks.{index}.attn."
        query, key_, value = (out.pop(prefix + f"{p}.weight") for p in ("query", "key", "value"))
        out[prefix + "qkv.weight"] = torch.cat([query, key_, value])
        if prefix + "query.bias" in out:
            out[prefix + "q_bias"] = out.pop(prefix + "query.bias")
            out[prefix + "v_bias"] = out.pop(prefix + "value.bias")
    return out


def map_vit(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """timm / VideoMAE ViT keys -> ours. Returns (mapped, unused source keys)."""
    config = model.config
    stack = "video.encoder" if getattr(model.video, "encoder", None) is not None else "fusion"
    grid = (config.image_size // config.patch_size) ** 2
    renames = {"mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    has_final_norm = "norm.weight" in state
    for key, value in state.items():
        match = re.match(r"blocks\.(\d+)\.(.+)$", key)
        if key.startswith("patch_embed.proj."):
            if value.ndim == 4:
                value = inflate_patch_kernel(value, config.tubelet)
            mapped["video.patch_embed." + key.rsplit(".", 1)[1]] = value
        elif key == "pos_embed" and config.video_pos == "learned" and value.shape[1] in (grid, grid + 1):
            spatial = value[:, -grid:]  # drops the class token's position
            mapped["video.spatial_pos"] = spatial.reshape(1, 1, grid, -1)
            mapped["video.temporal_pos"] = torch.zeros_like(model.video.temporal_pos)
        elif match is not None and match.group(2) not in ("attn.q_bias", "attn.v_bias"):
            rest = match.group(2)
            for old, new in renames.items():
                rest = rest.replace(old, new)
            mapped[f"{stack}.blocks.{match.group(1)}.{rest}"] = value
        elif match is not None:
            continue  # q_bias / v_bias: combined below
        elif key in ("norm.weight", "norm.bias") or (key.startswith("fc_norm.") and not has_final_norm):
            mapped[f"{stack}.norm.{key.rsplit('.', 1)[1]}"] = value
        else:
            unused.append(key)
    for key in [k for k in state if k.endswith("attn.q_bias")]:
        prefix = key[: -len("q_bias")]
        q_bias = state[key]
        bias = torch.cat([q_bias, torch.zeros_like(q_bias), state[prefix + "v_bias"]])  # VideoMAE has no key bias
        mapped[f"{stack}.{prefix}qkv.bias"] = bias
    return mapped, unused


def map_swin(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> tuple[dict, list[str]]:
    """torchvision Swin3D / Video Swin / timm 2D Swin keys -> `video.backbone.*` (torchvision layout)."""
    config = model.config
    renames = {"mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in state.items():
        name = None
        if source == "torchvision_swin3d":
            name = None if key.startswith("head.") else key
        else:
            block = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)$", key)
            down = re.match(r"layers\.(\d+)\.downsample\.(.+)$", key)
            if block is not None:
                rest = block.group(3)
                for old, new in renames.items():
                    rest = rest.replace(old, new)
                name = f"features.{2 * int(block.group(1))}.{block.group(2)}.{rest}"
            elif down is not None:  # Video Swin merges at the end of stage i, timm at the start of stage i
                stage = int(down.group(1))
                name = f"features.{2 * stage + 1 if source == 'video_swin' else 2 * stage - 1}.{down.group(2)}"
            elif key.startswith(("patch_embed.", "norm.")):
                name = key
        if name is None:
            unused.append(key)
            continue
        if source == "timm_swin" and name == "patch_embed.proj.weight":
            value = inflate_patch_kernel(value, config.tubelet)
        if source == "timm_swin" and name.endswith("relative_position_bias_table"):
            window_time = config.swin_window_list[0]
            value = value.repeat(2 * window_time - 1, 1)  # the same 2D bias at every time offset
        mapped["video.backbone." + name] = value
    return mapped, unused


def load_mapped(model: nn.Module, mapped: dict, unused: list[str], source: str, scope: tuple[str, ...]) -> dict:
    """Load `mapped` into `model` non-strictly, failing on shape mismatches, and report the rest."""
    own = tensor_shapes(model)  # also right for a model ZeRO-3 partitioned while it was built
    wrong = [f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key])}"
             for key, value in mapped.items() if key in own and own[key] != value.shape]
    if wrong:
        raise ValueError(f"{source}: shapes differ from the model built from the config: {'; '.join(wrong[:5])}")
    unexpected = sorted(unused + [key for key in mapped if key not in own])
    usable = {key: value for key, value in mapped.items() if key in own}  # load_into casts to each tensor's dtype
    if not usable:
        raise ValueError(f"{source}: none of its tensors match this model (unused: {unexpected[:8]})")
    load_into(model, usable)
    missing = sorted(key for key in own if key.startswith(scope) and key not in usable
                     and not key.endswith(_BUFFERS))
    logger.warning("initialised %d tensors from %s; not in it (kept random init): %s; in it but unused: %s",
                   len(usable), source, missing or "none", unexpected or "none")
    return {"loaded": sorted(usable), "missing": missing, "unexpected": unexpected}


def load_video_init(model: nn.Module, path: str) -> dict:
    state = read_state_dict(path)
    source = detect_video_format(state)
    if source == "hf_videomae":
        state, source = _hf_videomae_to_original(state), "videomae"
    state = {key: value for key, value in _strip(state, ("module.", "backbone.", "encoder.")).items()
             if not key.endswith(_BUFFERS)}
    swin = model.config.video_encoder == "swin"
    if swin != (source in ("torchvision_swin3d", "video_swin", "timm_swin")):
        raise ValueError(f"{path} is a {source} checkpoint; model.video_encoder={model.config.video_encoder}")
    if swin:
        mapped, unused = map_swin(state, model, source)
        scope: tuple[str, ...] = ("video.backbone.",)
    else:
        mapped, unused = map_vit(state, model)
        scope = ("video.", "fusion.") if getattr(model.video, "encoder", None) is None else ("video.",)
    report = load_mapped(model, mapped, unused, f"{path} ({source})", scope)
    return {**report, "format": source}


def load_text_init(model: nn.Module, directory: str) -> dict:
    """BERT weights (a local `from_pretrained` directory) -> embeddings, then the text stack's layers, then the
    fusion stack's (VIOLET: all 12 BERT layers become the fusion transformer)."""
    from transformers import BertModel

    if not Path(directory).is_dir():
        raise FileNotFoundError(f"model.text_init={directory!r}: not a local directory")
    bert = BertModel.from_pretrained(directory, local_files_only=True)
    config = model.config
    vocab = model.text.embeddings.word_embeddings.num_embeddings
    if bert.config.vocab_size != vocab:
        raise ValueError(f"{directory}: BERT vocabulary has {bert.config.vocab_size} entries, the tokenizer {vocab}; "
                         "use the same vocabulary (model.tokenizer)")
    if config.norm_first:
        logger.warning("BERT layers are post-norm; model.norm_first=true puts them into pre-norm blocks, which "
                       "compute a different function (VIOLET presets use norm_first=false)")
    state = bert.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("embeddings.") and not key.endswith("position_ids"):
            if key == "embeddings.position_embeddings.weight":
                value = value[: config.max_text_len]
            mapped["text." + key] = value
    stacks = ([("text.encoder", config.text_depth)] if config.text_depth > 0 else []) + [("fusion", config.fusion_depth)]
    layer = 0
    renames = {"attention.output.dense": "attn.proj", "attention.output.LayerNorm": "norm1",
               "intermediate.dense": "mlp.0", "output.dense": "mlp.3", "output.LayerNorm": "norm2"}
    for stack, depth in stacks:
        for block in range(depth):
            prefix = f"encoder.layer.{layer}."
            if prefix + "attention.self.query.weight" not in state:
                break
            for part in ("weight", "bias"):
                mapped[f"{stack}.blocks.{block}.attn.qkv.{part}"] = torch.cat(
                    [state[f"{prefix}attention.self.{p}.{part}"] for p in ("query", "key", "value")])
                for old, new in renames.items():
                    mapped[f"{stack}.blocks.{block}.{new}.{part}"] = state[f"{prefix}{old}.{part}"]
            layer += 1
    used = {key for key in state if key.startswith("embeddings.")}
    used |= {key for key in state if key.startswith("encoder.layer.") and int(key.split(".")[2]) < layer}
    unused = sorted(key for key in state if key not in used and not key.endswith("position_ids"))
    scope = ("text.",) + tuple(f"{stack}.blocks." for stack, _ in stacks)
    report = load_mapped(model, mapped, unused, f"{directory} (BERT, {layer} layers)", scope)
    return {**report, "format": "bert"}


def apply_pretrained_init(model: nn.Module) -> dict[str, dict]:
    """Apply `model.config.video_init` / `text_init`; returns the reports. Call right after building the model
    for a run that starts from scratch (not when fine-tuning from --init or resuming: those load our own weights)."""
    reports = {}
    if model.config.video_init:
        reports["video"] = load_video_init(model, model.config.video_init)
    if model.config.text_init:
        reports["text"] = load_text_init(model, model.config.text_init)
    return reports
