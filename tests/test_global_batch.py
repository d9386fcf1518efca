"""2 ranks x B == 1 rank x 2B for the retrieval objective (VTC over the global batch + VTM hard negatives drawn
from it): same loss and, after the gradient averaging DDP/DeepSpeed do, the same parameter gradients.
Runs the real RetrievalTask objective on real demo clips in 2 gloo processes."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import SMOKE_MODEL

from violet.config import RunConfig, apply_overrides, parse_dotted
from violet.data.collate import make_collate
from violet.data.text import load_tokenizer
from violet.tasks.retrieval import RetrievalTask

GLOBAL_BATCH = 8


def objective_gradients(data_dir: str, negatives: str, rank: int, world: int) -> tuple[float, dict]:
    """Loss (mean over ranks) and rank-averaged gradients of the retrieval objective on one global batch."""
    config = RunConfig()
    # A bare RunConfig carries pretraining's mlm_weight 1.0; retrieval's own default (0) leaves the MLM term out.
    overrides = [*SMOKE_MODEL, f"objective.vtm_negatives={negatives}", "objective.mlm_weight=0"]
    apply_overrides(config, parse_dotted(overrides))
    config.data.data_dir = data_dir
    task = RetrievalTask(config, load_tokenizer(""))
    torch.manual_seed(0)
    model = task.build_model()
    rows = task.require_split("train").select(range(GLOBAL_BATCH))
    dataset = task.clip_dataset(rows, train=False)
    per_rank = GLOBAL_BATCH // world
    samples = [dataset[index] for index in range(rank * per_rank, (rank + 1) * per_rank)]
    batch = make_collate(task.text_fields)(samples)
    loss, _ = task.training_step(model, batch, generator=None)  # VTC + VTM, negatives from the shared generator
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    loss = loss.detach()
    if world > 1:  # what DDP / DeepSpeed do with gradients, and what the Trainer logs for the loss
        for grad in grads.values():
            dist.all_reduce(grad)
            grad /= world
        dist.all_reduce(loss)
        loss /= world
    return float(loss), grads


def _worker(rank: int, world: int, port: int, data_dir: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {mode: objective_gradients(data_dir, mode, rank, world) for mode in ("global", "local")}
        if rank == 0:
            torch.save(results, os.path.join(out_dir, "two_ranks.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def test_two_ranks_match_one_rank_with_the_same_global_batch(demo_data, tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(demo_data), str(tmp_path)), nprocs=2, join=True)
    two = torch.load(tmp_path / "two_ranks.pt")
    one_loss, one_grads = objective_gradients(str(demo_data), "global", rank=0, world=1)

    loss, grads = two["global"]
    assert loss == pytest.approx(one_loss, rel=1e-5)
    scale = max(float(g.abs().max()) for g in one_grads.values())
    assert max_difference(grads, one_grads) < 2e-5 * scale
    # The contrastive temperature's gradient only matches if the logits span the global batch.
    assert torch.allclose(grads["heads.vtc.logit_scale"], one_grads["heads.vtc.logit_scale"], rtol=1e-4, atol=1e-7)

    # Control: drawing VTM negatives within each rank's half gives different pairs, hence different gradients,
    # so the equality above is not vacuous.
    _, local_grads = two["local"]
    assert max_difference(local_grads, one_grads) > 2e-4 * scale
