"""Streaming mode: rows split across ranks and workers exactly once per epoch, and a resumable position."""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import SMOKE_MODEL
from test_clip_store import clip, meta

from violet.data.clip_store import ClipStore, ClipStoreWriter
from violet.data.collate import collate_clips
from violet.data.streaming import (
    StreamingClipDataset,
    StreamingLoader,
    round_robin_counts,
    shuffle_buffer,
)

ROWS, BATCH, WORKERS, WORLD = 24, 3, 2, 2


def make_store(root: Path, count: int) -> datasets.Dataset:
    """`count` 4-frame clips spread over several small shards, and one caption row per clip."""
    one_clip = len(b"".join(clip(0)))
    with ClipStoreWriter(root, frames_per_video=4, short_side=32, shard_bytes=one_clip * 3, fsync=False) as writer:
        for i in range(count):
            writer.add(f"v{i:03d}.mp4", clip(i), meta(4))
    assert len(ClipStore(root).shards()) >= 6
    return datasets.Dataset.from_dict({"video": [f"v{i:03d}.mp4" for i in range(count)],
                                       "caption": [f"caption {i}" for i in range(count)]})


def make_dataset(rows: datasets.Dataset, store: Path, rank: int, world: int, **overrides: Any) -> StreamingClipDataset:
    options = {"batch_size": BATCH, "num_workers": WORKERS, "shuffle_buffer": 4, "seed": 5, **overrides}
    return StreamingClipDataset(rows, store, 2, 16, True, collate=collate_clips, rank=rank, world_size=world,
                                **options)


def indices(loader: StreamingLoader, limit: int | None = None) -> list[list[int]]:
    batches = []
    for batch in loader:
        batches.append(batch["index"].tolist())
        if limit is not None and len(batches) == limit:
            break
    return batches


def _rank_main(rank: int, world: int, port: int, root: str) -> None:
    # Ranks started by torchrun / accelerate launch fork their DataLoader workers; a spawned rank would spawn
    # them too (seconds of imports per worker and epoch), so restore the launcher's behaviour.
    multiprocessing.set_start_method("fork", force=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    rows = datasets.load_from_disk(os.path.join(root, "rows"))
    store = Path(root) / "store"
    cpu = torch.device("cpu")
    loader = StreamingLoader(make_dataset(rows, store, rank, world), WORKERS, device=cpu)
    epochs = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        epochs.append(indices(loader))
    # Interrupted in epoch 1 after 3 batches; a new process restores the saved position and finishes the epoch.
    interrupted = StreamingLoader(make_dataset(rows, store, rank, world), WORKERS, device=cpu)
    interrupted.set_epoch(1)
    before = indices(interrupted, limit=3)
    state = interrupted.dataset.state_dict()
    resumed = StreamingLoader(make_dataset(rows, store, rank, world), WORKERS, device=cpu)
    resumed.dataset.load_state_dict(state)
    resumed.set_epoch(1)  # what the Trainer calls after load_state: same epoch, position kept
    after = indices(resumed)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, {"epochs": epochs, "before": before, "after": after, "state": state})
    if rank == 0:
        Path(root, "result.json").write_text(json.dumps(gathered))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("stream")
    make_store(root / "store", ROWS).save_to_disk(str(root / "rows"))
    mp.spawn(_rank_main, args=(WORLD, free_port(), str(root)), nprocs=WORLD, join=True)
    return json.loads((root / "result.json").read_text())


def test_two_ranks_see_every_clip_exactly_once_per_epoch(two_ranks: list[dict[str, Any]]) -> None:
    for epoch in (0, 1):
        per_rank = [[i for batch in rank["epochs"][epoch] for i in batch] for rank in two_ranks]
        assert [len(batches) for batches in (rank["epochs"][epoch] for rank in two_ranks)] == [4, 4]  # even ranks
        assert all(len(batch) == BATCH for rank in two_ranks for batch in rank["epochs"][epoch])
        assert sorted(per_rank[0] + per_rank[1]) == list(range(ROWS))
    assert two_ranks[0]["epochs"][0] != two_ranks[0]["epochs"][1]  # a new order each epoch


def test_resume_continues_at_the_same_position(two_ranks: list[dict[str, Any]]) -> None:
    for rank in two_ranks:
        assert rank["state"]["epoch"] == 1 and rank["state"]["batches_consumed"] == 3
        assert rank["before"] + rank["after"] == rank["epochs"][1]
        assert len(rank["after"]) == 1


def test_leftover_rows_are_dropped_once_and_change_per_epoch(tmp_path: Path) -> None:
    rows = make_store(tmp_path, 29)  # 29 = 4 batches x 3 rows x 2 ranks + 5 left over
    plans = {}
    for epoch in (0, 1, 2):
        seen = []
        for rank in range(WORLD):
            dataset = make_dataset(rows, tmp_path, rank, WORLD, num_workers=3)
            assert dataset.batches_per_rank == 4 and sum(dataset.worker_batch_counts()) == 4
            seen += [row for worker in range(3) for batch in dataset.worker_batches(epoch, worker) for row in batch]
        assert len(seen) == len(set(seen)) == 24
        plans[epoch] = set(range(29)) - set(seen)
    assert len({frozenset(left) for left in plans.values()}) > 1


def test_rows_are_read_in_shard_order_within_a_worker(tmp_path: Path) -> None:
    rows = make_store(tmp_path, 24)
    dataset = make_dataset(rows, tmp_path, 0, 1, num_workers=1, shuffle_buffer=1)  # buffer of 1: no mixing
    store = ClipStore(tmp_path)
    shard_of = {video: store.locate(video).shard for video in rows["video"]}
    order = [rows[row]["video"] for batch in dataset.worker_batches(0, 0) for row in batch]
    runs = [shard_of[video] for i, video in enumerate(order) if i == 0 or shard_of[order[i - 1]] != shard_of[video]]
    assert len(runs) == len(set(runs))  # each shard is read in one go, never revisited


def test_round_robin_and_shuffle_buffer() -> None:
    assert round_robin_counts([3, 2], 0) == [0, 0]
    assert round_robin_counts([3, 2], 3) == [2, 1]
    assert round_robin_counts([3, 2], 5) == [3, 2]
    with pytest.raises(ValueError, match="past the end"):
        round_robin_counts([1, 1], 3)
    import random

    mixed = list(shuffle_buffer(list(range(100)), 10, random.Random(0)))
    assert sorted(mixed) == list(range(100)) and mixed != list(range(100))
    assert max(abs(position - item) for position, item in enumerate(mixed)) < 100  # windowed, not global
    assert list(shuffle_buffer(list(range(5)), 1, random.Random(0))) == list(range(5))


def test_layout_change_restarts_the_epoch(tmp_path: Path) -> None:
    rows = make_store(tmp_path, 24)
    dataset = make_dataset(rows, tmp_path, 0, 1)
    state = {**dataset.state_dict(), "epoch": 2, "batches_consumed": 5, "world_size": 4}
    dataset.load_state_dict(state)
    assert (dataset.epoch, dataset.batches_consumed) == (2, 0)


def test_trainer_saves_and_restores_the_stream_position(demo_data: Path, tmp_path: Path) -> None:
    import train

    out = tmp_path / "run"
    common = ["--task", "retrieval", "--data", str(demo_data), "--output-dir", str(out), "--batch-size", "4",
              *SMOKE_MODEL, "data.streaming=true", "train.save_every=2", "train.eval_batch_size=16"]
    train.main([*common, "--max-steps", "2"])

    def stream_state(step: int) -> dict[str, Any]:
        saved = out / "checkpoints" / f"step_{step}" / "trainer_state.json"  # JSON: nothing unpickled on resume
        state = json.loads(saved.read_text()).get("data_position") if saved.exists() else None
        if isinstance(state, dict) and "batches_consumed" in state:
            return state
        raise AssertionError(f"no streaming position saved in step_{step}")

    assert (stream_state(2)["epoch"], stream_state(2)["batches_consumed"]) == (0, 2)
    train.main([*common, "--max-steps", "4", "--resume"])
    # Continued after the 2 batches already consumed, not from the start of the epoch.
    assert (stream_state(4)["epoch"], stream_state(4)["batches_consumed"]) == (0, 4)
