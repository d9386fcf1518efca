import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from violet.data.collate import collate_clips, make_collate, unique_videos
from violet.data.video import decode_clip, sample_frame_indices


def test_eval_sampling_takes_segment_middles():
    assert sample_frame_indices(16, 4, train=False) == [2, 6, 10, 14]
    assert sample_frame_indices(16, 4, train=False) == sample_frame_indices(16, 4, train=False)


def test_train_sampling_stays_in_segments_and_varies():
    draws = {tuple(sample_frame_indices(16, 4, True, random.Random(seed))) for seed in range(30)}
    assert len(draws) > 5
    for draw in draws:
        for segment, index in enumerate(draw):
            assert 4 * segment <= index < 4 * (segment + 1)


def test_short_clips_are_stretched_not_failed():
    assert sample_frame_indices(1, 4, train=False) == [0, 0, 0, 0]
    assert sample_frame_indices(2, 4, train=True, rng=random.Random(0)) == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        sample_frame_indices(0, 4, train=False)


def jpeg(color, size=(120, 80)):
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_decode_clip_shape_and_centre_crop():
    clip = decode_clip([jpeg((255, 0, 0)), jpeg((0, 0, 255))], size=32, train=False)
    assert clip.shape == (2, 3, 32, 32) and clip.dtype == torch.uint8
    assert clip[0, 0].float().mean() > 240 and clip[1, 2].float().mean() > 240


def test_decode_uses_one_crop_for_all_frames():
    # left half black, right half white: the same random crop must give the same picture in both frames
    array = np.zeros((80, 120, 3), dtype=np.uint8)
    array[:, 60:] = 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95)  # the clip store holds JPEG only
    data = buffer.getvalue()
    clip = decode_clip([data, data], size=24, train=True, rng=random.Random(3), scale_min=0.3)
    assert torch.equal(clip[0], clip[1])


def test_collate_drops_errors_and_reports_them():
    good = {"index": 0, "video": "a.mp4", "frames": torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "caption": "x"}
    bad = {"index": 1, "video": "b.mp4", "error": "b.mp4: KeyError: not in store"}
    batch = collate_clips([good, bad])
    assert batch["frames"].shape == (1, 2, 3, 4, 4) and batch["index"].tolist() == [0]
    assert batch["errors"] == ["b.mp4: KeyError: not in store"] and batch["caption"] == ["x"]
    only_bad = make_collate(lambda b: {"never": 1})([bad])
    assert "frames" not in only_bad and "never" not in only_bad


def test_unique_videos_keeps_first_seen_order():
    import datasets

    rows = datasets.Dataset.from_dict({"video": ["b", "a", "b", "c"], "caption": ["1", "2", "3", "4"]})
    videos, mapping = unique_videos(rows)
    assert videos["video"] == ["b", "a", "c"] and mapping.tolist() == [0, 1, 0, 2]
