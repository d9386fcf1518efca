"""Pretraining: MLM + MVM + VTM + VTC on video-caption pairs, weighted from the config. Evaluation is zero-shot
retrieval on the captions of the chosen split.

Two MVM styles, chosen by the model (docs/models.md):
- VIOLET-style (`model.decoder_depth=0`): `objective.mvm_ratio` of the video tokens are replaced by a mask token
  inside the encoder; a linear head on the fusion outputs predicts their targets.
- SimVTP-style (`model.decoder_depth>0`): tube masking hides `objective.mvm_ratio` (0.9) of the tubes, and every
  video pass of the step (VTC, VTM, the joint MLM/MVM pass) encodes the visible tubes only; the MAE decoder
  reconstructs the hidden ones. The logged `video_tokens_encoded` is the fraction the encoder saw.
Targets (pixels, HOG, VQ tokens) come from `objective.mvm_target`; a VQ tokenizer is held here, frozen, outside
the trainable module.

Several corpora at once (video-text + image-text, per-corpus weights): `data.corpora` (violet/data/mixture.py).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from accelerate import Accelerator, PartialState
from torch.utils.data import DataLoader

from violet.data.collate import make_collate
from violet.data.layout import default_store_dir
from violet.data.mixture import (
    CorpusBatchSampler,
    CorpusMixture,
    CorpusSpec,
    parse_corpora,
)
from violet.data.prepared import load_prepared
from violet.models import VideoLanguageModel
from violet.objectives import MVMTarget, contrastive_and_matching, random_patch_mask, tube_mask
from violet.tasks.base import Task
from violet.tasks.ranking import (
    EvaluatedByRetrieval,
    RetrievalEvaluator,
    caption_fields,
    caption_heads,
    masked_language_terms,
)
from violet.tasks.registry import register
from violet.tasks.visuals import pretrain_visuals


@register("pretrain")
class PretrainTask(EvaluatedByRetrieval, Task):
    annotation_kind = "captions"
    heads = ("vtc", "vtm", "mlm", "mvm")
    supports_zero_shot = True
    # Zero-shot retrieval on val still rose from 25 to 35 epochs with 2 x 8 x 8 tubelets and VTM (docs/benchmarks.md,
    # "Ablations"). The tiny preset pretrains with 4 x 4 x 4 tubelets, VTC + MLM only, in 32 epochs instead (~224
    # steps, about 9 minutes on 2 CPU cores for ~250 videos): the finer tubelets cost more per step.
    defaults: ClassVar[dict[str, Any]] = {"train": {"epochs": 35, "lr": 5e-4}}

    def __init__(self, config: Any, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(config, tokenizer, **kwargs)
        self.heads = caption_heads(self.heads, config.objective)
        self.retrieval = RetrievalEvaluator(self)  # evaluation is zero-shot retrieval on the captions
        self.mvm_target = MVMTarget(config.objective, config.model)

    def text_fields(self, batch: dict[str, Any]) -> dict[str, Any]:
        return caption_fields(self.tokenizer, batch["caption"], self.config.model.max_text_len)

    def build_model(self) -> VideoLanguageModel:
        return VideoLanguageModel(self.config.model, len(self.tokenizer), self.heads,
                                  mvm_output_dim=self.mvm_target.output_dim)

    def train_loader(self) -> Any:
        spec = self.config.data.corpora  # empty: the --data corpus alone
        if not spec:
            return super().train_loader()
        return self.mixture_loader(spec)

    def mixture_loader(self, spec: str) -> DataLoader:
        """Batches from the --data corpus (weight 1) and the `data.corpora` ones, one corpus per batch."""
        data = self.config.data
        if data.streaming:
            raise ValueError("data.corpora mixes map-style corpora; set data.streaming=false")
        corpora = [CorpusSpec(self.data_dir, 1.0, data.num_frames), *parse_corpora(spec, data.num_frames)]
        datasets, names = [], []
        for index, corpus in enumerate(corpora):
            if index == 0:
                rows = self.train_rows()
            else:
                prepared = load_prepared(corpus.data_dir, "captions")
                if "train" not in prepared or not len(prepared["train"]):
                    raise FileNotFoundError(f"data.corpora: {corpus.data_dir} has no prepared train captions")
                rows = prepared["train"]
            datasets.append(self.clip_dataset(rows, data.train_augment, corpus.num_frames,
                                              store_dir=default_store_dir(corpus.data_dir)))
            names.append(f"{index}-{corpus.data_dir.name}")
        mixture = CorpusMixture(datasets, names, min_frames=self.config.model.tubelet)
        sampler = CorpusBatchSampler(mixture, [corpus.weight for corpus in corpora], self.config.train.batch_size,
                                     self.config.train.seed, PartialState().num_processes)
        workers = data.num_workers
        return DataLoader(mixture, batch_sampler=sampler, collate_fn=make_collate(self.text_fields),
                          num_workers=workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=workers > 0)


    def visuals(self, model: Any, accelerator: Accelerator) -> dict[str, dict[str, Any]]:
        """Per fixed clip: original frames, the masked input, the MVM prediction; the MLM predictions as text."""
        return pretrain_visuals(self, model, accelerator.device)

    def video_grid(self, frames: torch.Tensor) -> tuple[int, int]:
        """(time steps, tokens per step) of the video tokens the encoder produces for these frames."""
        model = self.config.model
        return math.ceil(frames.shape[1] / model.tubelet), (model.image_size // model.video_region) ** 2

    def training_step(self, model: Any, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        objective = self.config.objective
        frames = batch["frames"]
        steps, per_step = self.video_grid(frames)
        total = steps * per_step
        if "mvm" not in self.heads:  # no masked video pass: the joint MLM pass (if any) sees the clean video
            terms, video = self.contrastive_terms(model, batch)
            if "mlm" in self.heads:
                terms.update(masked_language_terms(self, model, batch, video["tokens"], None, generator))
            terms["video_tokens_encoded"] = torch.tensor(1.0)
            return sum(terms.get(name, 0.0) for name in ("vtc", "vtm", "mlm")), terms
        if self.config.model.decoder_depth > 0:
            hidden = tube_mask(frames.shape[0], steps, per_step, objective.mvm_ratio, frames.device, generator)
            terms, video = self.contrastive_terms(model, batch, video_mask=hidden)
            masked_video = video  # the visible tubes, already encoded once: the joint pass reuses them
        else:
            terms, video = self.contrastive_terms(model, batch)
            hidden = random_patch_mask(frames.shape[0], total, objective.mvm_ratio, frames.device, generator)
            masked_video = model("video", frames=frames, mvm_mask=hidden)
        # One more fused pass with masked words (when MLM is on) and masked video, predicting both.
        terms.update(masked_language_terms(self, model, batch, masked_video["tokens"], hidden, generator))
        terms["video_tokens_encoded"] = torch.tensor(video["tokens"].shape[1] / total)
        return sum(terms.get(name, 0.0) for name in ("vtc", "vtm", "mlm", "mvm")), terms

    def contrastive_terms(
        self, model: Any, batch: dict[str, Any], video_mask: torch.Tensor | None = None
    ) -> tuple[dict, dict]:
        """(VTC + VTM terms, the video pass); the negatives come from the rank-shared generator."""
        terms, video, _ = contrastive_and_matching(
            model, batch, self.config.objective, self.global_generator, matching="vtm" in self.heads,
            text_length=self.config.model.max_text_len, video_mask=video_mask,
        )
        return terms, video
