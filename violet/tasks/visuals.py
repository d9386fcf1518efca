"""What the model does on a few fixed clips, as images and markdown texts the Trainer logs (docs/monitoring.md).

The clips are the first `train.visual_samples` rows of the val split (of train when there is none), read without
augmentation and without a DataLoader; masks come from a private generator with a fixed seed, so every drawing of
a run shows the same clips under the same masks and no training random stream is touched.

Pretraining (`pretrain_visuals`) draws, per clip, one image: the original frames, the masked input as the
encoder saw it (hidden tokens grey: a mask token for VIOLET-style MVM, dropped tubes for SimVTP-style), and what
MVM predicts at the hidden tokens for the run's target:
- pixel: the decoder output un-normalised with each patch's own mean and variance (MAE's norm_pix targets), pasted
  over the hidden patches of the original;
- hog: target and predicted orientation histograms as glyphs: per cell, one line per orientation bin along the
  edge direction, as bright as the bin (summed over colour channels; both rows on the target's scale);
- vq: target and predicted token ids as colours (one fixed colour per id; hidden tokens only in the prediction
  row), plus the accuracy.
and one text: the caption, the masked input, and the MLM prediction at each masked word against the truth.

Fine-tuning (`finetune_visuals`, the default of every task) uses the public task API only: the frames and the
row's text; caption tasks add the top 3 of the first captions of the split ranked by the dual encoder, QA tasks
the predicted answer (`option_scores` for multiple choice, `answer_logits` for open-ended).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont

from violet.data.collate import make_collate
from violet.objectives import mask_text_tokens, random_patch_mask, tube_mask

VISUAL_SEED = 0
RANKED_CAPTIONS = 32  # caption tasks: candidates for the top-3 list (the split's first captions)
GREY, BACKGROUND, LABEL_WIDTH, GAP = 128, 24, 130, 2


# ----- the fixed clips -----
def fixed_batch(task: Any, device: torch.device, num_frames: int) -> tuple[dict[str, Any], str, Any] | None:
    """(collated batch on `device`, split name, its rows) of the first `train.visual_samples` rows; None if none."""
    count = task.config.train.visual_samples
    split = "val" if task.has_split("val") else "train"
    rows = task.require_split("val") if split == "val" else task.train_rows()
    count = min(count, len(rows))
    if count == 0:
        return None
    dataset = task.clip_dataset(rows.select(range(count)), train=False, num_frames=num_frames)
    batch = make_collate(task.text_fields)(dataset.__getitems__(list(range(count))))
    if "frames" not in batch:  # every clip unreadable
        return None
    batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
    return batch, split, rows


# ----- drawing -----
def display_scale(size: int) -> int:
    """Nearest-neighbour upscaling so that small training frames (32-64 px) stay visible."""
    return max(1, 128 // size)


def upscale(images: np.ndarray, scale: int) -> np.ndarray:
    """(T, H, W, 3) -> (T, H*scale, W*scale, 3)."""
    return images.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else images


def labelled_grid(rows: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """One image: per row a label, then its frames (T, H, W, 3) side by side; every row the same frame size."""
    frames = rows[0][1]
    _, height, width, _ = frames.shape
    columns = max(len(images) for _, images in rows)
    grid = np.full((len(rows) * (height + GAP) + GAP, LABEL_WIDTH + columns * (width + GAP) + GAP, 3),
                   BACKGROUND, dtype=np.uint8)
    for r, (_, images) in enumerate(rows):
        top = GAP + r * (height + GAP)
        for c, image in enumerate(images):
            left = LABEL_WIDTH + GAP + c * (width + GAP)
            grid[top:top + height, left:left + width] = image
    picture = Image.fromarray(grid)
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default(size=13)
    for r, (label, _) in enumerate(rows):
        top = GAP + r * (height + GAP)
        draw.multiline_text((6, top + max(0, height // 2 - 8)), label, fill=(235, 235, 235), font=font)
    return np.asarray(picture)


def frames_hwc(frames: torch.Tensor) -> np.ndarray:
    """uint8 (T, 3, H, W) tensor -> (T, H, W, 3) array."""
    return frames.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)


def hidden_pixels(hidden: torch.Tensor, frames: int, grid: int, tubelet: int, region: int) -> np.ndarray:
    """Bool (N,) over video tokens (time-major, rows, columns) -> bool (T, H, W) over the pixels they cover."""
    tokens = hidden.view(-1, grid, grid).cpu().numpy()
    return tokens.repeat(tubelet, axis=0)[:frames].repeat(region, axis=1).repeat(region, axis=2)


def masked_frames(images: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    out = images.copy()
    out[hidden] = GREY
    return out


# ----- MVM targets -----
def pixel_reconstruction(frames: torch.Tensor, predicted: torch.Tensor, hidden: torch.Tensor, tubelet: int,
                         region: int) -> np.ndarray:
    """Original pixels where visible; at hidden tokens the prediction (per-patch normalised, as the targets) mapped
    back to pixels with the original patch's mean and variance. -> uint8 (T, H, W, 3)."""
    grid = frames.shape[-1] // region
    layout = "(t pt) c (h ph) (w pw) -> (t h w) (pt ph pw c)"
    pixels = rearrange(frames.float() / 255.0, layout, pt=tubelet, ph=region, pw=region)
    mean, var = pixels.mean(dim=-1, keepdim=True), pixels.var(dim=-1, keepdim=True)
    restored = predicted.float() * (var + 1e-6).sqrt() + mean
    pixels = torch.where(hidden[:, None], restored, pixels).clamp(0, 1)
    images = rearrange(pixels, "(t h w) (pt ph pw c) -> (t pt) (h ph) (w pw) c", h=grid, w=grid, pt=tubelet,
                       ph=region, pw=region)
    return (images * 255).round().to(torch.uint8).cpu().numpy()


def glyph_kernels(bins: int, size: int) -> np.ndarray:
    """(bins, size, size): per orientation bin a line through the cell centre along the edge (perpendicular to
    the gradient; image rows grow downwards, as in hog_targets)."""
    coords = np.arange(size) - (size - 1) / 2
    y, x = np.meshgrid(coords, coords, indexing="ij")
    kernels = []
    for index in range(bins):
        edge = (index + 0.5) * math.pi / bins + math.pi / 2
        dx, dy = math.cos(edge), math.sin(edge)
        distance = np.abs(x * dy - y * dx)
        along = np.abs(x * dx + y * dy) <= size / 2
        kernels.append(np.clip(1.0 - distance, 0.0, 1.0) * along)
    return np.stack(kernels).astype(np.float32)


def hog_cells(features: torch.Tensor, shape: tuple[int, int, int], geometry: dict[str, int]) -> np.ndarray:
    """(N, tubelet * (region/cell)^2 * 3 * bins) HOG vectors (token order) -> (T, H/cell, W/cell, bins) per frame,
    summed over the colour channels; negative predictions count as 0."""
    frames, height, _ = shape
    tubelet, region, cell, bins = (geometry[key] for key in ("tubelet", "region", "cell", "bins"))
    per_side, grid = region // cell, height // region
    cells = rearrange(features.float().clamp(min=0).cpu(), "(t h w) (pt ch cw c k) -> (t pt) (h ch) (w cw) k c",
                      h=grid, w=grid, pt=tubelet, ch=per_side, cw=per_side, k=bins, c=3).sum(dim=-1)[:frames]
    return cells.numpy()


def hog_glyphs(cells: np.ndarray, scale: float, glyph: int) -> np.ndarray:
    """(T, rows, cols, bins) histograms -> uint8 (T, rows*glyph, cols*glyph, 3); `scale` is drawn at full white."""
    bins = cells.shape[-1]
    drawn = (cells / max(scale, 1e-9)) @ glyph_kernels(bins, glyph).reshape(bins, -1)
    drawn = rearrange(drawn, "t r c (gy gx) -> t (r gy) (c gx)", gy=glyph, gx=glyph)
    grey = (np.clip(drawn, 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def id_colours(ids: np.ndarray) -> np.ndarray:
    """A fixed colour per token id (a multiplicative hash, so no random stream is used)."""
    hashed = (ids.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFF)
    return np.stack([(hashed >> np.uint64(shift)) & np.uint64(255) for shift in (16, 8, 0)], axis=-1).astype(np.uint8)


def vq_map(ids: torch.Tensor, shown: torch.Tensor, frames: int, grid: int, block: int) -> np.ndarray:
    """(N, tubelet) token ids -> uint8 (T, grid*block, grid*block, 3) colour map; tokens not `shown` are black."""
    tubelet = ids.shape[1]
    colours = id_colours(ids.cpu().numpy()) * shown.cpu().numpy()[:, None, None]
    images = rearrange(colours, "(t h w) pt c -> (t pt) h w c", h=grid, w=grid, pt=tubelet)[:frames]
    return images.repeat(block, axis=1).repeat(block, axis=2)


def mvm_rows(task: Any, frames: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor,
             predicted: torch.Tensor) -> tuple[list[tuple[str, np.ndarray]], str]:
    """The rows after "original" and "masked input" for one clip, and a line on the MVM error at hidden tokens."""
    model, target = task.config.model, task.mvm_target
    scale, region, tubelet = display_scale(frames.shape[-1]), model.video_region, model.tubelet
    shape = (frames.shape[0], frames.shape[-2], frames.shape[-1])
    if target.kind == "pixel":
        error = float(((predicted[hidden] - targets[hidden]) ** 2).mean())
        image = pixel_reconstruction(frames, predicted, hidden, tubelet, region)
        return [("reconstruction\n(hidden patches\npredicted)", upscale(image, scale))], \
            f"MVM pixel MSE at hidden patches (normalised pixels): {error:.4f}"
    if target.kind == "hog":
        error = float(((predicted[hidden] - targets[hidden]) ** 2).mean())
        geometry = {"tubelet": tubelet, "region": region, "cell": target.cell, "bins": target.bins}
        truth = hog_cells(targets, shape, geometry)
        guess = hog_cells(torch.where(hidden[:, None], predicted, torch.zeros_like(predicted)), shape, geometry)
        glyph, top = target.cell * scale, float(truth.max())  # both rows on the target's scale
        rows = [("HOG target", hog_glyphs(truth, top, glyph)),
                ("HOG predicted\n(hidden only)", hog_glyphs(guess, top, glyph))]
        return rows, f"MVM HOG MSE at hidden tokens: {error:.4f}"
    accuracy = float((predicted[hidden] == targets[hidden]).float().mean())
    grid, block = frames.shape[-1] // region, region * scale
    everywhere = torch.ones_like(hidden)
    rows = [("VQ target ids", vq_map(targets, everywhere, shape[0], grid, block)),
            ("VQ predicted ids\n(hidden only)", vq_map(predicted, hidden, shape[0], grid, block))]
    return rows, f"MVM VQ token accuracy at hidden tokens: {100 * accuracy:.1f}%"


# ----- pretraining -----
def masked_pass(task: Any, model: Any, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
    """The joint MLM + MVM pass of the pretraining step, with masks drawn from `generator`. A run without MVM
    (objective.mvm_weight=0) reads the clean video, as its step does; its "hidden" and "predicted" are None."""
    config, frames = task.config, batch["frames"]
    steps, per_step = task.video_grid(frames)
    if "mvm" not in task.heads:
        hidden, masked_video = None, model("video", frames=frames)
    elif config.model.decoder_depth > 0:  # SimVTP: hidden tubes never enter the encoder
        hidden = tube_mask(frames.shape[0], steps, per_step, config.objective.mvm_ratio, frames.device, generator)
    else:  # VIOLET: hidden tokens replaced by the mask token
        hidden = random_patch_mask(frames.shape[0], steps * per_step, config.objective.mvm_ratio, frames.device,
                                   generator)
    if hidden is not None:
        masked_video = model("video", frames=frames, mvm_mask=hidden)
    masked_ids, positions = mask_text_tokens(
        batch["text_ids"], batch["text_mask"], task.special_ids.to(frames.device), task.tokenizer.mask_token_id,
        len(task.tokenizer), config.objective.mlm_prob, generator)
    text = model("text", ids=masked_ids, mask=batch["text_mask"], embed=False)
    fused = model("fusion", text_tokens=text["tokens"], text_mask=batch["text_mask"],
                  video_tokens=masked_video["tokens"], mlm_positions=positions, mvm_positions=hidden)
    mlm_predicted = batch["text_ids"].clone()
    mlm_predicted[positions] = fused["mlm_logits"].argmax(dim=-1)
    out = {"hidden": hidden, "targets": None, "predicted": None, "masked_ids": masked_ids, "mlm_positions": positions,
           "mlm_predicted": mlm_predicted}
    if hidden is None:
        return out
    targets = task.mvm_target.targets(frames)
    if task.mvm_target.kind == "vq":
        predicted = torch.zeros_like(targets)
        predicted[hidden] = fused["mvm_pred"].float().view(-1, targets.shape[-1], task.mvm_target.vocab).argmax(-1)
    else:
        predicted = torch.zeros_like(targets, dtype=torch.float)
        predicted[hidden] = fused["mvm_pred"].float()
    return {**out, "targets": targets, "predicted": predicted}


@torch.no_grad()
def pretrain_visuals(task: Any, model: Any, device: torch.device) -> dict[str, dict[str, Any]]:
    """Per fixed clip: an image (original, masked input, MVM prediction; the original alone without MVM) and a text
    (MLM predictions). A run without MLM draws nothing: these visuals show the joint masked pass's predictions."""
    if "mlm" not in task.heads:
        return {}
    found = fixed_batch(task, device, task.config.data.num_frames)
    if found is None:
        return {}
    batch, split, rows = found
    generator = torch.Generator(device=device).manual_seed(VISUAL_SEED)
    out = masked_pass(task, model, batch, generator)
    model_config, frames = task.config.model, batch["frames"]
    grid, scale = frames.shape[-1] // model_config.video_region, display_scale(frames.shape[-1])
    input_label = "masked input\n(dropped tubes)" if model_config.decoder_depth > 0 else "masked input\n(mask token)"
    images, texts = {}, {}
    for i in range(frames.shape[0]):
        original = frames_hwc(frames[i])
        rows, mvm_line = [], "No MVM in this run (objective.mvm_weight=0): MLM read the whole clip."
        if out["hidden"] is not None:
            hidden = hidden_pixels(out["hidden"][i], frames.shape[1], grid, model_config.tubelet,
                                   model_config.video_region)
            rows, mvm_line = mvm_rows(task, frames[i], out["hidden"][i], out["targets"][i], out["predicted"][i])
            rows = [(input_label, upscale(masked_frames(original, hidden), scale)), *rows]
        images[f"pretrain/clip_{i}"] = labelled_grid([("original", upscale(original, scale)), *rows])
        header = f"{split} row {int(batch['index'][i])}, video `{batch['video'][i]}`. {mvm_line}"
        texts[f"pretrain/clip_{i}"] = header + "\n\n" + mlm_text(task.tokenizer, batch, out, i)
    return {"images": images, "text": texts}


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def render_tokens(tokens: list[str], marked: list[bool]) -> str:
    """WordPieces joined into words, markdown-escaped; marked ones in bold."""
    text = ""
    for token, mark in zip(tokens, marked):
        piece = cell(token[2:] if token.startswith("##") else token)
        piece = f"**{piece}**" if mark else piece
        text += piece if token.startswith("##") else " " + piece
    return text.strip()


def mlm_text(tokenizer: Any, batch: dict[str, Any], out: dict[str, Any], row: int) -> str:
    """Markdown: the caption, the input with its masked words, and each masked word's prediction vs the truth."""
    length = int(batch["text_mask"][row].sum())
    words = {name: tokenizer.convert_ids_to_tokens(values[row][:length].tolist())
             for name, values in (("truth", batch["text_ids"]), ("input", out["masked_ids"]),
                                  ("predicted", out["mlm_predicted"]))}
    special = set(tokenizer.all_special_ids)
    keep = [j for j, token_id in enumerate(batch["text_ids"][row][:length].tolist()) if token_id not in special]
    masked = [bool(out["mlm_positions"][row][j]) for j in keep]
    lines = ["| | text |", "|---|---|", f"| caption | {cell(batch['caption'][row])} |",
             f"| masked input | {render_tokens([words['input'][j] for j in keep], masked)} |",
             f"| MLM output | {render_tokens([words['predicted'][j] for j in keep], masked)} |", "",
             "| position | input | predicted | truth | |", "|---|---|---|---|---|"]
    positions = [j for j, mark in zip(keep, masked) if mark]
    for j in positions:
        right = words["predicted"][j] == words["truth"][j]
        lines.append(f"| {j} | {cell(words['input'][j])} | {cell(words['predicted'][j])} | {cell(words['truth'][j])} "
                     f"| {'✓' if right else '✗'} |")
    correct = sum(words["predicted"][j] == words["truth"][j] for j in positions)
    lines.append(f"\nMLM: {correct} of {len(positions)} masked words right.")
    return "\n".join(lines)


# ----- fine-tuning (any task, through the public task API) -----
@torch.no_grad()
def finetune_visuals(task: Any, model: Any, device: torch.device) -> dict[str, dict[str, Any]]:
    """Per fixed clip: its frames, and a text with the row and what the model predicts for it."""
    found = fixed_batch(task, device, task.eval_num_frames())
    if found is None:
        return {}
    batch, split, rows = found
    frames = batch["frames"]
    explain = {"captions": caption_predictions, "qa_mc": choice_predictions, "qa_oe": answer_predictions}
    lines = explain.get(task.annotation_kind, lambda *_: [""] * frames.shape[0])(task, model, batch, rows)
    images, texts = {}, {}
    scale = display_scale(frames.shape[-1])
    for i in range(frames.shape[0]):
        images[f"{task.name}/clip_{i}"] = labelled_grid([("frames", upscale(frames_hwc(frames[i]), scale))])
        header = f"{split} row {int(batch['index'][i])}, video `{batch['video'][i]}`"
        texts[f"{task.name}/clip_{i}"] = f"{header}\n\n{lines[i]}"
    return {"images": images, "text": texts}


def caption_predictions(task: Any, model: Any, batch: dict[str, Any], rows: Any) -> list[str]:
    """The caption, and the top 3 of the split's first captions ranked by the dual encoder for the clip."""
    count = batch["frames"].shape[0]
    if "vtc" not in task.heads:
        return [f"caption: {batch['caption'][i]}" for i in range(count)]
    candidates = rows.select(range(min(len(rows), RANKED_CAPTIONS)))
    captions, videos = list(candidates["caption"]), list(candidates["video"])
    fields = task.text_fields({"caption": captions})
    device = batch["frames"].device
    text = model("text", ids=fields["text_ids"].to(device), mask=fields["text_mask"].to(device))["embed"]
    video = model("video", frames=batch["frames"])["embed"]
    top = (video.float() @ text.float().T).topk(min(3, len(captions)), dim=1)
    out = []
    for i in range(count):
        lines = [f"caption: **{cell(batch['caption'][i])}**", "",
                 f"| rank | caption (of the first {len(captions)} in the split) | similarity | |", "|---|---|---|---|"]
        for rank, (score, index) in enumerate(zip(top.values[i].tolist(), top.indices[i].tolist()), start=1):
            same = videos[index] == batch["video"][i]
            lines.append(f"| {rank} | {cell(captions[index])} | {score:.3f} | {'✓ (its video)' if same else ''} |")
        out.append("\n".join(lines))
    return out


def choice_predictions(task: Any, model: Any, batch: dict[str, Any], rows: Any) -> list[str]:
    """Question, options (the answer ✓, the model's choice →) via the task's `option_scores`."""
    scorer = getattr(task, "option_scores", None)
    chosen = scorer(model, batch)[0].argmax(dim=1).tolist() if scorer else [None] * len(batch["question"])
    out = []
    for i, question in enumerate(batch["question"]):
        lines = [f"question: **{cell(question)}**", "", "| option | | |", "|---|---|---|"]
        for k, option in enumerate(batch["options"][i]):
            lines.append(f"| {cell(option)} | {'answer ✓' if k == batch['answer'][i] else ''} "
                         f"| {'← model' if k == chosen[i] else ''} |")
        out.append("\n".join(lines))
    return out


def answer_predictions(task: Any, model: Any, batch: dict[str, Any], rows: Any) -> list[str]:
    """Question, the answer, and the model's top 3 answers with probabilities via the task's `answer_logits`."""
    scorer, answers = getattr(task, "answer_logits", None), getattr(task, "answers", None)
    out = []
    probabilities = scorer(model, batch)[0].float().softmax(dim=-1) if scorer and answers else None
    for i, question in enumerate(batch["question"]):
        lines = [f"question: **{cell(question)}**", f"answer: **{cell(batch['answer'][i])}**"]
        if probabilities is not None:
            top = probabilities[i].topk(min(3, len(answers)))
            lines += ["", "| model's answer | probability | |", "|---|---|---|"]
            for p, k in zip(top.values.tolist(), top.indices.tolist()):
                right = answers[k] == batch["answer"][i].strip().lower()
                lines.append(f"| {cell(answers[k])} | {p:.3f} | {'✓' if right else ''} |")
        out.append("\n".join(lines))
    return out
