"""Shared fixtures: one small demo data set, made and prepared once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Small enough for 2 CPU cores; the real code paths (PyAV mp4 -> decord extraction -> Arrow) all run.
SMOKE_MODEL = ["model.image_size=32", "model.patch_size=8", "model.tubelet=2", "model.width=64",
               "model.embed_dim=32", "data.num_workers=0", "train.eval_batch_size=16", "train.log_every=1"]
# Runs that compare N processes with one, step by step: the tiny retrieval recipe adds MLM, whose masks each rank
# draws from its own generator, so two ranks mask other words than one process does; such comparisons run on the
# contrastive term alone.
NO_MLM = ["objective.mlm_weight=0"]


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from prepare.__main__ import main as prepare_main
    from prepare.demo import make_demo

    root = tmp_path_factory.mktemp("demo")
    make_demo(root, seed=0, n_train=24, n_val=8, n_test=10, size=64, frames=12, fps=8)
    assert prepare_main([str(root), "--frames", "8", "--short-side", "48", "--workers", "2"]) == 0
    return root


@pytest.fixture()
def demo_copy(demo_data, tmp_path) -> Path:
    """A private copy for tests that change the data."""
    target = tmp_path / "data"
    shutil.copytree(demo_data, target)
    return target
