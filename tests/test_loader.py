"""The fast loader: DCT-scaled decode with the right geometry, optional flip, epochs reaching persistent workers."""
from __future__ import annotations

import io
import random
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from violet.config import DataConfig
from violet.data.clip_store import ClipStoreWriter
from violet.data.collate import collate_clips
from violet.data.datasets import ClipDataset
from violet.data.sampling import EpochShuffleSampler, steady_memory_worker_init
from violet.data.video import crop_box, decode_clip, decode_frames


def textured_jpeg(seed: int, size: tuple[int, int] = (256, 192)) -> bytes:
    """Smooth random texture (JPEG-friendly), so crops at different places give different pixels."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def reference(jpegs: list[bytes], size: int, box: tuple[float, ...]) -> torch.Tensor:
    """Full-size PIL decode, then the same crop and antialiased resize: what DCT scaling must approximate."""
    frames = []
    for data in jpegs:
        full = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
        left, top, right, bottom = (round(v) for v in box)
        crop = torch.from_numpy(full[top:bottom, left:right]).permute(2, 0, 1)[None].float()
        frames.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)[0])
    return torch.stack(frames)


def test_decode_downscales_in_the_dct_domain() -> None:
    jpeg = textured_jpeg(0)  # 256 x 192
    assert decode_frames([jpeg]).shape == (1, 192, 256, 3)
    assert decode_frames([jpeg], min_width=60, min_height=40).shape == (1, 48, 64, 3)  # 1/4 scale covers 60x40
    assert decode_frames([jpeg], min_width=200, min_height=150).shape[1:3] == (168, 224)  # 7/8


@pytest.mark.parametrize(("size", "train", "seed"), [(32, False, 0), (64, True, 1), (160, True, 2), (192, False, 3)])
def test_decoded_clip_matches_a_full_decode_of_the_same_crop(size: int, train: bool, seed: int) -> None:
    jpegs = [textured_jpeg(seed), textured_jpeg(seed + 10)]
    clip = decode_clip(jpegs, size, train, random.Random(seed), scale_min=0.3)
    box = crop_box(256, 192, train, random.Random(seed), 0.3)
    assert clip.shape == (2, 3, size, size) and clip.dtype == torch.uint8
    error = (clip.float() - reference(jpegs, size, box)).abs().mean()
    assert error < 6, error  # DCT-domain scaling and pixel rounding of the box: a few grey levels, not a misplacement
    shifted = reference(jpegs, size, (box[0] + 30, box[1], box[2] + 30, box[3]))
    assert (clip.float() - shifted).abs().mean() > 2 * error


def test_flip_is_off_by_default_and_mirrors_some_clips_when_on() -> None:
    assert DataConfig().horizontal_flip is False
    array = np.zeros((64, 64, 3), np.uint8)
    array[:, 32:] = 255  # dark left, bright right
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    jpegs = [buffer.getvalue()] * 2

    def left_is_dark(flip: bool, seed: int) -> bool:
        clip = decode_clip(jpegs, 32, True, random.Random(seed), scale_min=1.0, flip=flip)
        assert torch.equal(clip[0], clip[1])  # one decision per clip
        return clip[..., :16].float().mean() < clip[..., 16:].float().mean()

    assert all(left_is_dark(False, seed) for seed in range(20))
    flipped = [not left_is_dark(True, seed) for seed in range(20)]
    assert 3 <= sum(flipped) <= 17
    assert left_is_dark(True, 0) == left_is_dark(True, 0)  # seeded: the same clip every time


def test_bad_jpeg_names_the_frame() -> None:
    with pytest.raises(ValueError, match="frame 1 is not a decodable JPEG"):
        decode_frames([textured_jpeg(0), b"\xff\xd8 not really"])


def test_epoch_sampler_is_a_seeded_permutation_carrying_the_epoch() -> None:
    sampler = EpochShuffleSampler(10, seed=3)
    first = list(sampler)
    assert first == list(sampler) and sorted(i for _, i in first) == list(range(10))
    assert {epoch for epoch, _ in first} == {0}
    sampler.set_epoch(1)
    second = list(sampler)
    assert {epoch for epoch, _ in second} == {1} and [i for _, i in second] != [i for _, i in first]
    assert [i for _, i in EpochShuffleSampler(10, seed=4)] != [i for _, i in first]


def write_textured_store(root: Path, count: int, frames: int) -> list[str]:
    """A clip store of `count` videos with `frames` distinct textured frames each; returns their ids."""
    videos = [f"v{i}.mp4" for i in range(count)]
    with ClipStoreWriter(root, frames_per_video=frames, short_side=192, fsync=False) as writer:
        for n, video in enumerate(videos):
            writer.add(video, [textured_jpeg(frames * n + f) for f in range(frames)],
                       {"width": 256, "height": 192, "src_fps": float(frames), "src_frames": frames, "duration": 1.0,
                        "frame_times": [f / frames for f in range(frames)], "decoder": "decord"})
    return videos


def test_persistent_workers_sample_new_clips_each_epoch(tmp_path: Path) -> None:
    videos = write_textured_store(tmp_path, count=6, frames=8)
    rows = datasets.Dataset.from_dict({"video": videos})
    dataset = ClipDataset(rows, tmp_path, num_frames=2, size=32, train=True, crop_scale_min=0.5, seed=7)
    sampler = EpochShuffleSampler(len(dataset), seed=7)
    loader = DataLoader(dataset, batch_size=3, sampler=sampler, num_workers=2, persistent_workers=True,
                        collate_fn=collate_clips, worker_init_fn=steady_memory_worker_init)
    seen: dict[int, dict[int, torch.Tensor]] = {}
    workers = set()
    for epoch in (0, 1):
        sampler.set_epoch(epoch)  # only the sampler hears about the epoch: the workers keep their dataset copy
        seen[epoch] = {}
        for batch in loader:
            for index, frames in zip(batch["index"].tolist(), batch["frames"], strict=True):
                seen[epoch][index] = frames
        workers.add(id(loader._iterator) if loader._iterator is not None else None)
    assert len(workers) == 1  # the same worker processes served both epochs
    for epoch in (0, 1):
        for index, frames in seen[epoch].items():
            assert torch.equal(frames, dataset[(epoch, index)]["frames"])  # the epoch reached the worker
    assert any(not torch.equal(seen[0][i], seen[1][i]) for i in range(6))


@pytest.mark.parametrize(("frame_size", "size", "train"), [((256, 256), 224, False), ((256, 192), 64, True),
                                                           ((256, 192), 96, False)])
def test_decoding_into_a_batch_slot_gives_the_same_clip(frame_size: tuple[int, int], size: int, train: bool) -> None:
    jpegs = [textured_jpeg(5, frame_size), textured_jpeg(6, frame_size)]
    expected = decode_clip(jpegs, size, train, random.Random(4), scale_min=0.5)
    slots = torch.full((3, 2, size, size, 3), 7, dtype=torch.uint8)
    clip = decode_clip(jpegs, size, train, random.Random(4), scale_min=0.5, out=slots[1])
    assert clip.data_ptr() == slots[1].data_ptr() and torch.equal(clip, expected)
    assert (slots[0] == 7).all() and (slots[2] == 7).all()  # neighbours untouched
    # 256 -> 224 centre crop of a square frame is the 7/8 DCT scale itself: no crop, no resize, the same pixels
    # as a plain decode at that scale.
    if frame_size == (256, 256):
        assert torch.equal(clip.permute(0, 2, 3, 1), torch.from_numpy(decode_frames(jpegs, 224, 224)))
    with pytest.raises(ValueError, match="out must be"):
        decode_clip(jpegs, size, train, out=slots[:, 0])


def test_batch_is_the_buffer_the_clips_were_decoded_into(tmp_path: Path) -> None:
    videos = write_textured_store(tmp_path, count=4, frames=4)
    rows = datasets.Dataset.from_dict({"video": [*videos[:2], "missing.mp4", *videos[2:]]})
    dataset = ClipDataset(rows, tmp_path, num_frames=2, size=48, train=True, crop_scale_min=0.5, seed=1)
    singles = [dataset[(0, index)]["frames"] for index in (0, 1, 3, 4)]
    samples = dataset.__getitems__([(0, 0), (0, 1)])
    batch = collate_clips(samples)
    assert batch["frames"].data_ptr() == samples[0]["frames"].data_ptr()  # no stacking copy
    assert batch["frames"].shape == (2, 2, 3, 48, 48) and torch.equal(batch["frames"], torch.stack(singles[:2]))
    # A bad clip leaves a gap in the buffer: the good clips are stacked instead, still in order and correct.
    gapped = collate_clips(dataset.__getitems__([(0, i) for i in range(5)]))
    assert gapped["index"].tolist() == [0, 1, 3, 4] and len(gapped["errors"]) == 1
    assert torch.equal(gapped["frames"], torch.stack(singles))


def _small_store(root: Path, count: int) -> list[str]:
    videos = [f"v{i}.mp4" for i in range(count)]
    with ClipStoreWriter(root, frames_per_video=2, short_side=192, fsync=False) as writer:
        for n, video in enumerate(videos):
            writer.add(video, [textured_jpeg(2 * n + f) for f in range(2)],
                       {"width": 256, "height": 192, "src_fps": 2.0, "src_frames": 2, "duration": 1.0,
                        "frame_times": [0.0, 0.5], "decoder": "decord"})
    return videos


def test_worker_batch_buffers_are_reused_only_after_the_main_process_drops_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lease protocol, both sides in one process: a separate storage stands for the main process's mapping."""
    import violet.data.buffers as loader_module

    monkeypatch.setattr(loader_module, "_outstanding", [])
    monkeypatch.setattr(loader_module, "_lease_arrays", {})
    buffers = loader_module._WorkerBatchBuffers()

    def receive(storage: torch.UntypedStorage) -> dict:
        main_copy = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage(storage.nbytes()))
        leases, *lease = buffers.lease(storage)
        batch = loader_module._received_batch({"frames": main_copy, "index": [0]}, leases, *lease)
        assert batch["index"].tolist() == [0]
        return batch

    first = buffers.take(64)
    assert buffers.lease(first)[0] is buffers.leases  # the lease array goes with the batches ...
    first_in_main = receive(first)
    assert buffers.lease(first)[0] is None  # ... until the main process knows it
    second = buffers.take(64)
    assert second.data_ptr() != first.data_ptr()  # the first is still held by the main process
    second_in_main = receive(second)
    del first_in_main
    receive(buffers.take(64))  # receiving any batch sweeps the dropped ones
    assert buffers.take(64).data_ptr() == first.data_ptr()  # the dropped buffer is back in use
    assert all(buffers.take(64).data_ptr() != second.data_ptr() for _ in range(10))  # never the held one
    assert second_in_main["frames"].numel() == 64
    # Every buffer out: one-offs, never a pooled buffer.
    pooled = {buffer.data_ptr() for buffer in buffers.buffers if buffer is not None}
    assert len(pooled) == loader_module.BUFFERS_PER_WORKER and buffers.take(64).data_ptr() not in pooled
    # A buffer taken but not delivered (its batch was stacked instead) is given back at once.
    slot_leases = buffers.leases.clone()
    buffers.leases[3] = 0
    again = buffers.take(64)
    buffers.give_back(again)
    assert int(buffers.leases[3]) == 0 and torch.equal(buffers.leases[:3], slot_leases[:3])
    assert buffers.take(64).data_ptr() == buffers.buffers[3].data_ptr()


def test_held_batches_stay_intact_when_every_worker_buffer_is_out(tmp_path: Path) -> None:
    videos = _small_store(tmp_path, 20)
    dataset = ClipDataset(datasets.Dataset.from_dict({"video": videos}), tmp_path, 2, 32, train=True, seed=3,
                          crop_scale_min=0.5)
    sampler = EpochShuffleSampler(len(dataset), seed=3)
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=2, persistent_workers=True,
                        collate_fn=collate_clips)
    held = []
    for epoch in (0, 1):  # 40 batches held at once, more than the 2 x 8 pooled buffers
        sampler.set_epoch(epoch)
        held += [(epoch, int(batch["index"][0]), batch["frames"][0]) for batch in loader]
    for batch_number, (epoch, index, frames) in enumerate(held):
        assert torch.equal(frames, dataset[(epoch, index)]["frames"]), batch_number
    dropped = [int(batch["index"][0]) for batch in loader for _ in range(1)]  # batches dropped as they come
    assert sorted(dropped) == list(range(20))
