import pytest
import torch

from violet.metrics import accuracy, ranks_of_targets, retrieval_metrics


def test_ranks_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    # row 0 target 0 -> rank 1; row 1 target 0 -> 3; row 2 target 1 -> 2
    assert ranks_of_targets(scores, torch.tensor([0, 0, 1])).tolist() == [1, 3, 2]


def test_ties_count_against_the_query():
    scores = torch.zeros(2, 4)
    assert ranks_of_targets(scores, torch.tensor([0, 3])).tolist() == [4, 4]


def test_retrieval_metrics_with_two_captions_per_video():
    # videos: 0, 1; captions 0,1 -> video 0; caption 2 -> video 1
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    metrics = retrieval_metrics(scores, torch.tensor([0, 0, 1]))
    assert metrics["t2v_r1"] == pytest.approx(200 / 3)  # caption 1 ranks its video second
    assert metrics["t2v_medr"] == 1.0 and metrics["t2v_meanr"] == pytest.approx(4 / 3)
    # v2t: video 0 best caption (0) rank 1; video 1 best caption (2) ranked below caption 1 (0.8 > 0.7) -> 2
    assert metrics["v2t_r1"] == 50.0 and metrics["v2t_r5"] == 100.0
    assert metrics["n"] == 3 and metrics["n_videos"] == 2


def test_retrieval_metrics_reject_videos_without_captions():
    with pytest.raises(ValueError, match="at least one caption"):
        retrieval_metrics(torch.rand(2, 3), torch.tensor([0, 1]))


def test_accuracy_counts_oov_as_wrong():
    predictions = torch.tensor([1, 2, 0, 0])
    answers = torch.tensor([1, 2, -1, 3])
    assert accuracy(predictions, answers) == 50.0
    with pytest.raises(ValueError):
        accuracy(torch.tensor([]), torch.tensor([]))
