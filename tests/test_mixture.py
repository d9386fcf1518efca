"""Multi-corpus pretraining: one corpus per batch, weighted draws, the same corpus on every rank of a step,
images as static clips, and a pretraining step on an image batch and a video batch from prepared data."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from PIL import Image

from violet.data.mixture import CorpusBatchSampler, CorpusMixture, parse_corpora


class FakeClips:
    """Stands in for ClipDataset: rows with `frames` of a given length."""

    def __init__(self, size: int, frames: int) -> None:
        self.size, self.frames, self.epoch = size, frames, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        _, index = key
        return {"index": index, "video": f"v{index}", "frames": torch.full((self.frames, 3, 4, 4), index)}


def test_parse_corpora_and_errors():
    specs = parse_corpora("/data/cc3m=0.5@1, /data/webvid=2", default_frames=4)
    assert [(str(s.data_dir), s.weight, s.num_frames) for s in specs] == [("/data/cc3m", 0.5, 1),
                                                                           ("/data/webvid", 2.0, 4)]
    with pytest.raises(ValueError, match="'/x=abc'"):
        parse_corpora("/x=abc", 4)
    with pytest.raises(ValueError, match="weight > 0"):
        parse_corpora("/x=0", 4)


def test_batches_come_from_one_corpus_with_the_given_weights():
    mixture = CorpusMixture([FakeClips(64, 4), FakeClips(200, 1)], ["videos", "images"], min_frames=2)
    sampler = CorpusBatchSampler(mixture, [1.0, 3.0], batch_size=8, seed=0, world_size=2)
    counts = Counter()
    for epoch in range(6):
        mixture.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == (64 // 8 + 200 // 8) // 2 * 2
        for first, second in zip(batches[0::2], batches[1::2]):  # consecutive batches go to the 2 ranks of a step
            corpora = {key[1] for key in first} | {key[1] for key in second}
            assert len(corpora) == 1
            counts[corpora.pop()] += 1
        assert all(key[0] == epoch for batch in batches for key in batch)
    assert 0.65 < counts[1] / sum(counts.values()) < 0.85  # weight 3 of 4
    mixture.set_epoch(3)
    assert list(sampler) == list(sampler)  # a resumed run skipping batches sees the same order
    mixture.set_epoch(4)
    other = list(sampler)
    mixture.set_epoch(3)
    assert other != list(sampler)


def test_images_become_static_clips_and_ids_are_per_corpus():
    mixture = CorpusMixture([FakeClips(4, 4), FakeClips(4, 1)], ["a", "b"], min_frames=2)
    image = mixture[(0, 1, 3)]
    assert image["frames"].shape[0] == 2 and torch.equal(image["frames"][0], image["frames"][1])
    assert image["video"] == "b:v3" and mixture[(0, 0, 3)]["video"] == "a:v3"
    assert mixture[(0, 0, 3)]["frames"].shape[0] == 4


def _image_corpus(root, count=16):
    (root / "videos" / "img").mkdir(parents=True)
    (root / "annotations").mkdir()
    rows = []
    for i in range(count):
        colour = (i * 15 % 256, 255 - i * 15 % 256, 80)
        Image.new("RGB", (48, 48), colour).save(root / "videos" / "img" / f"{i:03d}.jpg")
        rows.append({"video": f"img/{i:03d}.jpg", "caption": f"a plain picture number {i}"})
    (root / "annotations" / "captions_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_pretraining_step_on_image_and_video_batches(demo_data, tmp_path):
    from prepare.__main__ import main as prepare_main
    from violet.data.text import load_tokenizer
    from violet.models import preset
    from violet.runtime import build_config
    from violet.tasks.pretrain import PretrainTask

    images = _image_corpus(tmp_path / "images")
    assert prepare_main([str(images), "--frames", "8", "--short-side", "48", "--workers", "1"]) == 0
    config = build_config(PretrainTask, model="violet-tiny", flags={"train": {"batch_size": 8}},
                          dotted=["model.image_size=32", "data.num_workers=0", "data.num_frames=4"])
    config.data.data_dir = str(demo_data)
    config.data.corpora = f"{images}=1@1"  # until DataConfig declares the field (see docs/models.md)
    task = PretrainTask(config, load_tokenizer(config.model.tokenizer))
    loader = task.train_loader()
    frame_counts = Counter()
    model = task.build_model()
    seen = set()
    for batch in loader:
        frames = batch["frames"].shape[1]
        frame_counts[frames] += 1
        corpus = {video.split(":")[0] for video in batch["video"]}
        assert len(corpus) == 1
        if frames not in seen:  # one full pretraining step per kind of batch
            seen.add(frames)
            loss, terms = task.training_step(model, batch, torch.Generator().manual_seed(0))
            loss.backward()
            assert torch.isfinite(loss) and terms["mvm"] > 0
    assert set(frame_counts) == {2, 4}  # images as 2-frame static clips (the tubelet), videos as 4 frames
    assert preset("violet-tiny").tubelet == 2
