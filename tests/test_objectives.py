import math

import pytest
import torch

from violet.objectives import (
    mask_text_tokens, mlm_loss, mvm_loss, pixel_targets, random_patch_mask, sample_hard_negatives, vtc_loss,
    vtm_loss,
)


def test_text_masking_respects_padding_and_special_tokens():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (64, 20))
    ids[:, 0], ids[:, 15] = 101, 102
    mask = torch.ones_like(ids)
    mask[:, 16:] = 0
    ids[:, 16:] = 0
    masked, positions = mask_text_tokens(ids, mask, torch.tensor([101, 102, 0]), 103, 30522, 0.15, generator)
    assert not positions[:, 0].any() and not positions[:, 15:].any()
    assert positions.any(dim=1).all()  # every row predicts something
    rate = positions[:, 1:15].float().mean().item()
    assert 0.12 < rate < 0.22
    replaced = masked[positions] == 103
    assert 0.7 < replaced.float().mean().item() < 0.9  # ~80 % become [MASK]
    assert torch.equal(masked[~positions], ids[~positions])


def test_patch_mask_has_exact_count():
    mask = random_patch_mask(5, 128, 0.3, torch.device("cpu"), torch.Generator().manual_seed(1))
    assert mask.sum(dim=1).tolist() == [round(0.3 * 128)] * 5
    assert not torch.equal(mask[0], mask[1])


def test_pixel_targets_order_and_normalisation():
    frames = torch.zeros(1, 2, 3, 8, 8, dtype=torch.uint8)
    frames[0, :, :, :4, 4:] = 200  # top-right quadrant of both frames bright
    targets = pixel_targets(frames, patch=4, tubelet=1)
    assert targets.shape == (1, 2 * 4, 3 * 16)
    raw = torch.zeros(1, 2, 3, 8, 8, dtype=torch.uint8)
    raw[0, 0, 0, 0, 0] = 255  # one bright pixel in patch 0 of frame 0
    t = pixel_targets(raw, patch=4, tubelet=1)
    assert t[0, 0].std() > 0.5 and t[0, 1].abs().max() < 1e-3  # only patch 0 varies
    assert t[0, 0].mean().abs() < 1e-4


def test_vtc_loss_prefers_aligned_embeddings():
    embed = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor([100.0])
    aligned = vtc_loss(embed, embed, scale, 1.0)["vtc"]
    shuffled = vtc_loss(embed, embed.roll(1, 0), scale, 1.0)["vtc"]
    assert aligned < 0.1 < shuffled
    # identical video keys make both captions positives: the loss of a duplicated pair stays low
    dup = torch.cat([embed[:1], embed[:1]])
    multi = vtc_loss(dup, dup, scale, 1.0, video_ids=torch.tensor([7, 7]))["vtc"]
    assert float(multi) == pytest.approx(math.log(2), abs=1e-3)
    assert float(vtc_loss(embed, embed, scale, 0.5)["vtc"]) == pytest.approx(0.5 * float(aligned), rel=1e-5)


def test_hard_negatives_never_pick_positives():
    similarity = torch.randn(6, 6)
    keys = torch.tensor([0, 0, 1, 2, 3, 4])
    same = keys[:, None] == keys[None, :]
    for seed in range(20):
        v, t = sample_hard_negatives(similarity, same, True, torch.Generator().manual_seed(seed))
        assert not same[torch.arange(6), v].any() and not same[t, torch.arange(6)].any()


def test_hard_negatives_follow_similarity():
    similarity = torch.full((3, 3), -20.0)
    similarity[0, 2] = 20.0
    v, _ = sample_hard_negatives(similarity, torch.eye(3, dtype=torch.bool), True, torch.Generator().manual_seed(0))
    assert v[0] == 2


def test_vtm_loss_labels_positives_first():
    seen = {}

    def fuse(text, mask, video):
        seen["text"], seen["video"] = text, video
        logits = torch.zeros(text.shape[0], 2)
        logits[: text.shape[0] // 3, 1] = 10.0  # perfect scorer: positives are the first third
        logits[text.shape[0] // 3 :, 0] = 10.0
        return logits

    text = torch.arange(3).float().view(3, 1, 1)
    video = torch.arange(3).float().view(3, 1, 1) + 10
    mask = torch.ones(3, 1)
    video_for_text, text_for_video = torch.tensor([1, 2, 0]), torch.tensor([2, 0, 1])
    terms = vtm_loss(fuse, text, mask, video, video[video_for_text], text[text_for_video], mask[text_for_video], 1.0)
    assert terms["vtm"] < 1e-3 and terms["vtm_acc"] == 1.0
    assert seen["video"][3:6, 0, 0].tolist() == [11, 12, 10]  # texts paired with their negative videos
    assert seen["text"][6:, 0, 0].tolist() == [2, 0, 1]


def test_vtm_loss_pads_texts_of_different_lengths():
    """Negatives gathered from another rank may be padded to a different length than this rank's texts."""
    seen = {}

    def fuse(text, mask, video):
        seen["text"], seen["mask"] = text, mask
        return torch.zeros(text.shape[0], 2)

    text, mask = torch.ones(2, 3, 4), torch.ones(2, 3)
    longer, longer_mask = torch.ones(2, 5, 4), torch.ones(2, 5)
    vtm_loss(fuse, text, mask, torch.zeros(2, 6, 4), torch.zeros(2, 6, 4), longer, longer_mask, 1.0)
    assert seen["text"].shape == (6, 5, 4)
    assert seen["mask"][:4, 3:].sum() == 0 and seen["mask"][4:].sum() == 10  # padding is masked out


def test_mlm_and_mvm_losses():
    ids = torch.tensor([[5, 6, 7]])
    positions = torch.tensor([[False, True, False]])
    logits = torch.full((1, 10), -10.0)
    logits[0, 6] = 10.0
    terms = mlm_loss(logits, ids, positions, 2.0)
    assert terms["mlm"] < 1e-6 and terms["mlm_acc"] == 1.0
    targets = torch.randn(1, 4, 3)
    where = torch.tensor([[True, False, True, False]])
    assert mvm_loss(targets[where], targets, where, 1.0)["mvm"] == 0
    assert float(mvm_loss(targets[where] + 1, targets, where, 3.0)["mvm"]) == pytest.approx(3.0)
