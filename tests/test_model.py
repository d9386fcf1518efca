import dataclasses

import pytest
import torch

from violet.models import VideoLanguageModel, count_parameters, preset


def tiny(**overrides):
    return dataclasses.replace(preset("tiny"), **overrides)


def inputs(config, batch=2, frames=4, length=7):
    video = torch.randint(0, 256, (batch, frames, 3, config.image_size, config.image_size), dtype=torch.uint8)
    ids = torch.randint(1000, 2000, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 5:] = 0
    return video, ids, mask


def test_modes_and_shapes():
    config = tiny()
    model = VideoLanguageModel(config, 3000, ["vtc", "vtm", "mlm", "mvm"])
    frames, ids, mask = inputs(config)
    video = model("video", frames=frames)
    grid = (config.image_size // config.patch_size) ** 2
    assert video["tokens"].shape == (2, 4 // config.tubelet * grid, config.width)
    assert torch.allclose(video["embed"].norm(dim=-1), torch.ones(2))
    text = model("text", ids=ids, mask=mask)
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[:, 2] = True
    mvm = torch.zeros(video["tokens"].shape[:2], dtype=torch.bool)
    mvm[:, :3] = True
    fused = model("fusion", text_tokens=text["tokens"], text_mask=mask, video_tokens=video["tokens"],
                  mlm_positions=positions, mvm_positions=mvm)
    assert fused["vtm_logits"].shape == (2, 2)
    assert fused["mlm_logits"].shape == (2, 3000)
    assert fused["mvm_pred"].shape == (6, 3 * config.tubelet * config.patch_size ** 2)
    with pytest.raises(ValueError, match="unknown mode"):
        model("both")


def test_only_requested_heads_exist():
    model = VideoLanguageModel(tiny(), 3000, ["qa_oe"], num_answers=5)
    assert set(model.heads) == {"qa_oe"} and model.video.mask_token is None
    with pytest.raises(KeyError, match="unknown head"):
        VideoLanguageModel(tiny(), 3000, ["itc"])
    with pytest.raises(ValueError, match="num_answers"):
        VideoLanguageModel(tiny(), 3000, ["qa_oe"], num_answers=0)


def test_padding_does_not_change_text_features():
    config = tiny()
    model = VideoLanguageModel(config, 3000, ["vtc"]).eval()
    ids = torch.randint(1000, 2000, (1, 5))
    short = model("text", ids=ids, mask=torch.ones(1, 5, dtype=torch.long))["embed"]
    padded_ids = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    padded_mask = torch.tensor([[1] * 5 + [0] * 3])
    padded = model("text", ids=padded_ids, mask=padded_mask)["embed"]
    assert torch.allclose(short, padded, atol=1e-5)


def test_mlm_decoder_is_tied_and_decay_groups():
    model = VideoLanguageModel(tiny(), 3000, ["mlm", "vtc"])
    assert model.heads["mlm"].decoder.weight is model.text.embeddings.word_embeddings.weight
    skip = model.no_weight_decay()
    assert "heads.vtc.logit_scale" in skip and "video.spatial_pos" in skip
    assert "text.embeddings.word_embeddings.weight" in skip
    assert "fusion.blocks.0.attn.qkv.weight" not in skip


@pytest.mark.parametrize("init_std", [0.0, 0.02])
def test_mlm_starts_near_uniform_so_it_does_not_swamp_the_other_losses(init_std):
    """With the tied decoder over unit-variance embeddings (init_std=0), MLM once started at ~39 against ln V ~ 10:
    its gradient took the whole clipping budget and the contrastive loss of the same step stalled for ~100 steps."""
    torch.manual_seed(0)
    vocab = 30522
    config = tiny(init_std=init_std)
    model = VideoLanguageModel(config, vocab, ["vtc", "vtm", "mlm", "mvm"])
    frames, ids, mask = inputs(config, length=12)
    text = model("text", ids=ids, mask=mask)
    video = model("video", frames=frames)
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[:, 1:11] = True
    fused = model("fusion", text_tokens=text["tokens"], text_mask=mask, video_tokens=video["tokens"],
                  mlm_positions=positions)
    loss = torch.nn.functional.cross_entropy(fused["mlm_logits"], ids[positions])
    assert loss.item() < torch.log(torch.tensor(float(vocab))).item() + 1.5, loss.item()


def test_wrong_input_size_is_a_clear_error():
    config = tiny()
    model = VideoLanguageModel(config, 3000, ["vtc"])
    with pytest.raises(ValueError, match="model expects"):
        model("video", frames=torch.zeros(1, 4, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="max_frames"):
        model("video", frames=torch.zeros(1, 16, 3, config.image_size, config.image_size, dtype=torch.uint8))


def test_gradient_checkpointing_gives_same_gradients():
    config = tiny()
    torch.manual_seed(0)
    plain = VideoLanguageModel(config, 3000, ["vtc"])
    checkpointed = VideoLanguageModel(dataclasses.replace(config, grad_checkpointing=True), 3000, ["vtc"])
    checkpointed.load_state_dict(plain.state_dict())
    frames, _, _ = inputs(config)
    for model in (plain, checkpointed):
        model("video", frames=frames)["embed"].sum().backward()
    grad_a = plain.video.patch_embed.weight.grad
    grad_b = checkpointed.video.patch_embed.weight.grad
    assert torch.allclose(grad_a, grad_b, atol=1e-6)


def test_bf16_forward_runs():
    config = tiny()
    model = VideoLanguageModel(config, 3000, ["vtc", "vtm"]).to(torch.bfloat16)
    frames, ids, mask = inputs(config)
    video = model("video", frames=frames)
    assert video["tokens"].dtype == torch.bfloat16
    assert torch.isfinite(video["embed"].float()).all()


def test_base_preset_size_is_plausible():
    with torch.device("meta"):
        model = VideoLanguageModel(preset("base"), 30522, ["vtc", "vtm", "mlm", "mvm"])
    assert 150e6 < count_parameters(model) < 300e6


def test_text_scored_answers_are_each_question_answer_text_against_its_own_video():
    from violet.data.text import load_tokenizer
    from violet.tasks.qa_oe import answer_candidates, text_answer_logits

    config = tiny()
    tokenizer = load_tokenizer()
    model = VideoLanguageModel(config, len(tokenizer), ["vtc"]).eval()
    frames = inputs(config)[0]
    questions, answers = ["which way first?", "how many moves?"], ["left", "two", "red"]
    candidates = answer_candidates(tokenizer, questions, answers, config.max_text_len)
    with torch.no_grad():
        video = model("video", frames=frames)
        logits = text_answer_logits(model, video, candidates["input_ids"], candidates["attention_mask"])[0]
        assert logits.shape == (2, 3)
        # Row q, column a is "question q answer a" alone against video q (question-major candidate order).
        alone = answer_candidates(tokenizer, [questions[1]], [answers[2]], config.max_text_len)
        text = model("text", ids=alone["input_ids"], mask=alone["attention_mask"])
        expected = text["logit_scale"] * (text["embed"][0] * video["embed"][1]).sum()
    assert torch.allclose(logits[1, 2], expected.squeeze(), atol=1e-4)
    assert not torch.allclose(logits[0, 2], logits[1, 2])  # another question and video: another score


def test_segment_pooling_keeps_the_order_of_time_and_the_mean_does_not():
    from violet.models.video_language import segment_means

    first, later = torch.randn(1, 6, 4), torch.randn(1, 6, 4)  # two time steps of 6 tokens each (time-major)
    clip, reversed_clip = torch.cat([first, later], dim=1), torch.cat([later, first], dim=1)
    assert torch.allclose(segment_means(clip, 1), segment_means(reversed_clip, 1))  # the mean forgets the order
    two = segment_means(clip, 2)
    assert torch.allclose(two, torch.cat([first.mean(dim=1), later.mean(dim=1)], dim=-1))
    assert not torch.allclose(two, segment_means(reversed_clip, 2))
    with pytest.raises(ValueError, match="video_pool_segments=20"):
        segment_means(clip, 20)


def test_a_segment_pooled_model_embeds_a_clip_and_its_reversal_apart():
    config = tiny(video_pool_segments=2)
    torch.manual_seed(0)
    model = VideoLanguageModel(config, 3000, ["vtc"]).eval()
    assert model.heads["vtc"].video_proj.in_features == 2 * config.width
    frames = inputs(config, frames=8)[0]
    with torch.no_grad():
        forward, backward = model("video", frames=frames)["embed"], model("video", frames=frames.flip(1))["embed"]
    assert forward.shape == (2, config.embed_dim)
    assert (forward * backward).sum(dim=-1).max() < 0.99


def test_a_segment_pooled_model_returns_its_order_swapped_embedding_and_a_mean_pooled_one_does_not():
    """`order_swapped_embed` is the projection of the same segment means in the other order (the temporal
    contrast's "segments" negative): computed from the real pass, not by encoding the clip again."""
    import torch.nn.functional as F

    from violet.models.video_language import segment_means

    torch.manual_seed(0)
    model = VideoLanguageModel(tiny(video_pool_segments=2), 3000, ["vtc"]).eval()
    frames = inputs(model.config, frames=8)[0]
    with torch.no_grad():
        out = model("video", frames=frames)
        first, later = segment_means(out["tokens"], 2).chunk(2, dim=-1)
        expected = F.normalize(model.heads["vtc"].video_proj(torch.cat([later, first], dim=-1)), dim=-1)
        assert torch.allclose(out["order_swapped_embed"], expected, atol=1e-6)
        assert not torch.allclose(out["order_swapped_embed"], out["embed"], atol=1e-3)
        assert "order_swapped_embed" not in VideoLanguageModel(tiny(), 3000, ["vtc"])("video", frames=frames)


def test_attention_pooling_can_single_out_the_one_token_that_differs():
    """The learned query reads keys from every token and returns their values weighted by its match: with the
    query and keys set to look at one feature, the pool returns the one token that has it, where the mean
    returns the background. (Query and keys swapped, or a mean after the attention, would not.)"""
    from violet.models.video_language import AttentionPool

    width = 4
    pool = AttentionPool(width, heads=1, mlp_ratio=2.0)
    with torch.no_grad():
        eye = torch.eye(width)
        pool.attn.in_proj_weight.copy_(torch.cat([eye, 10 * eye, eye]))  # query, key, value projections
        pool.attn.in_proj_bias.zero_()
        pool.attn.out_proj.weight.copy_(eye)
        pool.attn.out_proj.bias.zero_()
        pool.mlp[-1].weight.zero_()
        pool.mlp[-1].bias.zero_()
        pool.probe.copy_(10 * eye[0].view(1, 1, width))
        background, thing = eye[1], eye[0] + eye[1]
        tokens = background.repeat(1, 50, 1)
        tokens[0, 17] = thing
        pooled = pool(tokens)
    assert pooled.shape == (1, width)
    assert torch.allclose(pooled[0], thing, atol=1e-3)
    assert not torch.allclose(tokens.mean(dim=1)[0], thing, atol=0.5)


def test_an_attention_pooled_model_embeds_the_clip_through_its_pool_and_trains_the_query():
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = VideoLanguageModel(tiny(video_pool="attention", patch_size=8, tubelet=2), 3000, ["vtc"])
    head = model.heads["vtc"]
    frames = inputs(model.config, frames=8)[0]
    out = model("video", frames=frames)
    expected = F.normalize(head.video_proj(head.video_pool(out["tokens"])), dim=-1)
    assert torch.allclose(out["embed"], expected, atol=1e-6)
    assert not torch.allclose(out["embed"], F.normalize(head.video_proj(out["tokens"].mean(dim=1)), dim=-1), atol=1e-3)
    out["embed"][:, 0].sum().backward()
    assert head.video_pool.probe.grad.abs().sum() > 0
    assert "heads.vtc.video_pool.probe" in model.no_weight_decay()
    assert VideoLanguageModel(tiny(), 3000, ["vtc"]).heads["vtc"].video_pool is None  # the mean stays the default


def test_the_temperature_starts_where_configured_and_a_fixed_one_gets_no_gradient():
    learned = VideoLanguageModel(tiny(temperature=0.05), 3000, ["vtc"])
    fixed = VideoLanguageModel(tiny(temperature=0.05, learn_temperature=False), 3000, ["vtc"])
    frames = inputs(learned.config)[0]
    for model in (learned, fixed):
        out = model("video", frames=frames)
        assert float(out["logit_scale"]) == pytest.approx(20.0, rel=1e-5)
        (out["logit_scale"] * out["embed"].sum()).backward()
    assert learned.heads["vtc"].logit_scale.grad is not None
    assert not fixed.heads["vtc"].logit_scale.requires_grad and fixed.heads["vtc"].logit_scale.grad is None
    assert "heads.vtc.logit_scale" in dict(fixed.named_parameters())  # the same keys load into either kind
