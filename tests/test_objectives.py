import math

import pytest
import torch

import violet.objectives.matching as matching_module
from violet.config import ObjectiveConfig
from violet.objectives import (
    contrastive_and_matching, mask_text_tokens, match_score, matching_negatives, mlm_loss, mvm_loss, pixel_targets,
    random_patch_mask, reverse_time, sample_hard_negatives, swap_halves, temporal_order_loss, video_keys, vtc_loss,
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


def test_swap_halves_puts_the_second_half_first():
    frames = torch.arange(8.0).view(1, 8, 1, 1, 1).expand(2, 8, 3, 2, 2)
    swapped = swap_halves(frames)
    assert swapped[0, :, 0, 0, 0].tolist() == [4, 5, 6, 7, 0, 1, 2, 3]
    assert torch.equal(swap_halves(swapped), frames)  # twice is the identity for an even number of frames


def test_reverse_time_plays_each_clip_backwards():
    frames = torch.arange(5.0).view(1, 5, 1, 1, 1).expand(2, 5, 3, 2, 2) + torch.tensor([0.0, 10.0]).view(2, 1, 1, 1, 1)
    backwards = reverse_time(frames)
    assert backwards[0, :, 0, 0, 0].tolist() == [4, 3, 2, 1, 0]
    assert backwards[1, :, 2, 1, 1].tolist() == [14, 13, 12, 11, 10]  # each clip on its own, every pixel
    assert torch.equal(reverse_time(backwards), frames)


def test_temporal_order_loss_prefers_the_real_order():
    text = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    other = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    scale = torch.tensor([100.0])
    right = temporal_order_loss(text, text, other, scale, 1.0)
    wrong = temporal_order_loss(text, other, text, scale, 1.0)
    assert float(right["temporal"]) < 0.1 < float(wrong["temporal"])
    assert float(right["temporal_acc"]) == 1.0 and float(wrong["temporal_acc"]) == 0.0
    # a clip whose halves look alike gives no preference: ln 2, whatever the caption
    same = temporal_order_loss(text, other, other, scale, 1.0)["temporal"]
    assert float(same) == pytest.approx(math.log(2), abs=1e-5)
    assert float(temporal_order_loss(text, other, text, scale, 0.5)["temporal"]) == pytest.approx(
        0.5 * float(wrong["temporal"]), rel=1e-5)


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


def test_match_score_is_the_log_odds_of_a_match():
    logits = torch.tensor([[1.0, 3.0], [2.0, -1.0]], dtype=torch.float16)
    assert match_score(logits).tolist() == [2.0, -3.0] and match_score(logits).dtype == torch.float32


def test_video_keys_are_equal_exactly_for_equal_videos():
    keys = video_keys(["a.mp4", "b.mp4", "a.mp4"], torch.device("cpu"))
    assert keys[0] == keys[2] and keys[0] != keys[1]
    assert torch.equal(keys, video_keys(["a.mp4", "b.mp4", "a.mp4"], torch.device("cpu")))  # stable


def encoded_rows(keys: list[int], offset: int = 0, length: int = 5) -> tuple[dict, dict, torch.Tensor, torch.Tensor]:
    """Text and video encoder outputs whose token values are their row number (+ offset), so a selected negative
    tells which row it came from."""
    rows = len(keys)
    ids = torch.arange(rows, dtype=torch.float).view(rows, 1, 1) + offset
    generator = torch.Generator().manual_seed(rows + offset)
    text = {"embed": torch.nn.functional.normalize(torch.randn(rows, 8, generator=generator), dim=-1),
            "tokens": ids.expand(rows, length, 4).clone()}
    video = {"embed": torch.nn.functional.normalize(torch.randn(rows, 8, generator=generator), dim=-1),
             "tokens": ids.expand(rows, 3, 4).clone()}
    return text, video, torch.ones(rows, length, dtype=torch.long), torch.tensor(keys)


@pytest.mark.parametrize("pooling", ["global", "local"])
@pytest.mark.parametrize("hard", [True, False])
def test_matching_negatives_never_pick_a_positive_pair(pooling, hard):
    keys = [0, 0, 1, 2, 2, 3]  # two clips with two captions each
    text, video, mask, key = encoded_rows(keys)
    for seed in range(20):
        videos, texts, masks = matching_negatives(
            text, video, mask, key, [len(keys)], pooling=pooling, hard=hard,
            generator=torch.Generator().manual_seed(seed), text_length=7,
        )
        video_rows, text_rows = videos[:, 0, 0].long(), texts[:, 0, 0].long()
        assert (key[video_rows] != key).all() and (key[text_rows] != key).all()
        assert masks.shape == texts.shape[:2]


def test_matching_negatives_draw_what_sample_hard_negatives_draws():
    """One process: the pairs are sample_hard_negatives' draw on the batch similarity, from the same generator."""
    text, video, mask, key = encoded_rows([0, 1, 2, 3, 4])
    generator = torch.Generator().manual_seed(3)
    videos, texts, _ = matching_negatives(text, video, mask, key, [5], pooling="global", hard=True,
                                          generator=generator, text_length=5)
    similarity = text["embed"] @ video["embed"].T
    expected_v, expected_t = sample_hard_negatives(similarity, key[:, None] == key[None, :], True,
                                                   torch.Generator().manual_seed(3))
    assert videos[:, 0, 0].long().tolist() == expected_v.tolist()
    assert texts[:, 0, 0].long().tolist() == expected_t.tolist()
    assert not torch.equal(generator.get_state(), torch.Generator().manual_seed(3).get_state())  # consumed


def pretend_second_of_two_ranks(monkeypatch: pytest.MonkeyPatch, calls: list) -> None:
    """Global-batch gathers as rank 1 of 2 would see them: rank 0 holds the same rows with values + 100 (other
    videos, other tokens)."""

    def gather(tensor: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
        calls.append(tensor.shape)
        return torch.cat([tensor + 100, tensor])

    monkeypatch.setattr(matching_module, "gather_with_grad", gather)
    monkeypatch.setattr(matching_module, "local_offset", lambda sizes: sizes[0])


def test_local_pooling_picks_within_the_local_batch(monkeypatch):
    calls = []
    pretend_second_of_two_ranks(monkeypatch, calls)
    text, video, mask, key = encoded_rows([0, 1, 2, 3])
    for seed in range(20):
        videos, texts, masks = matching_negatives(
            text, video, mask, key, [4, 4], pooling="local", hard=False,
            generator=torch.Generator().manual_seed(seed), text_length=9,
        )
        assert videos.max() < 4 and texts.max() < 4  # rows of this rank only
        assert texts.shape == (4, 5, 4) and masks.shape == (4, 5)  # no padding for a gather that is not made
    assert calls == []  # nothing crossed ranks


def test_global_pooling_picks_across_ranks_and_keeps_this_ranks_rows(monkeypatch):
    calls = []
    pretend_second_of_two_ranks(monkeypatch, calls)
    text, video, mask, key = encoded_rows([0, 1, 2, 3])
    seen_other_rank = False
    for seed in range(20):
        videos, texts, masks = matching_negatives(
            text, video, mask, key, [4, 4], pooling="global", hard=False,
            generator=torch.Generator().manual_seed(seed), text_length=9,
        )
        assert videos.shape[0] == texts.shape[0] == 4  # one negative per row of this rank
        video_rows, text_rows = videos[:, 0, 0].long(), texts[:, 0, 0].long()
        # Global row ids: rank 0's rows are 100..103 (keys + 100), this rank's 0..3 (keys): never the same key.
        assert (video_rows != torch.arange(4)).all() and (text_rows != torch.arange(4)).all()
        seen_other_rank |= bool((video_rows >= 100).any() or (text_rows >= 100).any())
        # Padded to text_length before the gather; this rank's padding is masked out.
        assert texts.shape == (4, 9, 4) and masks.shape == (4, 9) and masks[text_rows < 100, 5:].eq(0).all()
    assert seen_other_rank


def test_matching_negatives_reject_an_unknown_pooling():
    text, video, mask, key = encoded_rows([0, 1])
    with pytest.raises(ValueError, match="global|local"):
        matching_negatives(text, video, mask, key, [2], pooling="ranked", hard=True, generator=None, text_length=5)


class FakeModel:
    """The VideoLanguageModel modes contrastive_and_matching calls, recording them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, mode: str, **inputs) -> dict:
        rows = len(inputs.get("frames", inputs.get("ids", inputs.get("text_tokens"))))
        self.calls.append((mode, rows))
        if mode == "fusion":
            return {"vtm_logits": torch.zeros(rows, 2)}
        embed = torch.nn.functional.normalize(torch.randn(rows, 8), dim=-1)
        return {"embed": embed, "tokens": torch.randn(rows, 3, 8), "logit_scale": torch.tensor(10.0)}


def caption_batch(videos: list[str]) -> dict:
    rows = len(videos)
    return {"frames": torch.zeros(rows, 2, 3, 4, 4), "text_ids": torch.ones(rows, 5, dtype=torch.long),
            "text_mask": torch.ones(rows, 5, dtype=torch.long), "video": videos}


def test_contrastive_and_matching_without_vtm_skips_the_fused_pass():
    model = FakeModel()
    terms, video, text = contrastive_and_matching(model, caption_batch(["a", "b", "a", "c"]), ObjectiveConfig(),
                                                  torch.Generator(), matching=False, text_length=5)
    assert [mode for mode, _ in model.calls] == ["video", "text"]
    assert float(terms["vtm"]) == 0.0 and terms["vtc"] > 0 and "vtm_acc" not in terms
    assert video["embed"].shape == text["embed"].shape == (4, 8)


def test_contrastive_and_matching_fuses_positives_and_both_negatives_once():
    model = FakeModel()
    generator = torch.Generator().manual_seed(0)
    objective = ObjectiveConfig(vtm_weight=0.5)
    terms, _, _ = contrastive_and_matching(model, caption_batch(["a", "b", "a", "c"]), objective, generator,
                                           matching=True, text_length=5)
    assert model.calls == [("video", 4), ("text", 4), ("fusion", 12)]
    assert float(terms["vtm"]) == pytest.approx(0.5 * math.log(2))  # zero logits: chance on every pair
    assert not torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())  # drew negatives


def test_the_segments_negative_needs_segment_pooling():
    from violet.config import ConfigError, ModelConfig
    from violet.objectives import check_temporal_negative

    objective = ObjectiveConfig(temporal_weight=1.0, temporal_negative="segments")
    with pytest.raises(ConfigError, match="video_pool_segments >= 2, got 1"):
        check_temporal_negative(objective, ModelConfig())
    check_temporal_negative(objective, ModelConfig(video_pool_segments=2))
    check_temporal_negative(ObjectiveConfig(temporal_weight=0.0, temporal_negative="segments"), ModelConfig())


@pytest.mark.parametrize("rows", [0, 2])
def test_temporal_rows_limit_the_altered_pass_to_the_first_clips(rows):
    """objective.temporal_rows > 0: the second video pass sees only the first `rows` clips, played backwards, and
    the loss is the temporal loss over those rows alone; 0 keeps every row."""
    from violet.objectives import temporal_order_terms

    frames = torch.randn(5, 4, 3, 2, 2)
    embed = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    seen = []

    def model(kind, frames):  # a stand-in video encoder: an embedding per clip from its pixels
        seen.append(frames)
        return {"embed": torch.nn.functional.normalize(frames.flatten(1)[:, :8], dim=-1)}

    video = {"embed": embed, "logit_scale": torch.tensor([10.0])}
    terms = temporal_order_terms(model, frames, text, video, 1.0, "reverse", rows)
    used = rows or 5
    assert len(seen) == 1 and torch.equal(seen[0], reverse_time(frames[:used]))
    altered = model("video", seen[0])["embed"]
    expected = temporal_order_loss(text[:used], embed[:used], altered, video["logit_scale"], 1.0)
    assert float(terms["temporal"]) == pytest.approx(float(expected["temporal"]))


@pytest.mark.parametrize("rows", [0, 2])
def test_mlm_rows_fuse_and_predict_the_first_rows_only(rows):
    """objective.mlm_rows > 0: the masked-language pass fuses only the first `rows` captions with their clips, and
    its loss is the one those rows alone give (the same masks drawn); 0 keeps every row."""
    from types import SimpleNamespace

    from violet.tasks.ranking import masked_language_terms

    vocab, width = 50, 4
    head = torch.nn.Linear(width, vocab)
    fused_inputs = []

    def model(kind, **inputs):  # stand-ins for the text and fusion passes
        if kind == "text":
            return {"tokens": torch.nn.functional.one_hot(inputs["ids"] % width, width).float()}
        fused_inputs.append(inputs)
        mixed = inputs["text_tokens"] + inputs["video_tokens"].mean(dim=1, keepdim=True)
        return {"mlm_logits": head(mixed[inputs["mlm_positions"]])}

    class Tokenizer:
        mask_token_id = 3

        def __len__(self) -> int:
            return vocab

    def task_with(mlm_rows):
        objective = ObjectiveConfig(mlm_prob=0.5, mlm_rows=mlm_rows)
        return SimpleNamespace(config=SimpleNamespace(objective=objective), heads=("mlm",),
                               special_ids=torch.tensor([0, 1, 2]), tokenizer=Tokenizer())

    ids = torch.randint(5, vocab, (5, 9))
    batch = {"text_ids": ids, "text_mask": torch.ones_like(ids)}
    video = torch.randn(5, 6, width)
    terms = masked_language_terms(task_with(rows), model, batch, video, None, torch.Generator().manual_seed(0))
    used = rows or 5
    assert len(fused_inputs[0]["text_tokens"]) == used and torch.equal(fused_inputs[0]["video_tokens"], video[:used])
    alone = {"text_ids": ids[:used], "text_mask": torch.ones_like(ids[:used])}
    expected = masked_language_terms(task_with(0), model, alone, video[:used], None, torch.Generator().manual_seed(0))
    assert float(terms["mlm"]) == pytest.approx(float(expected["mlm"]))
