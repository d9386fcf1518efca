"""Training state that is not model or optimizer: the Trainer's counters and its random generators.

Each object has `state_dict` / `load_state_dict`; the Checkpointer saves them with every checkpoint (as JSON and
safetensors, below) so a resumed run continues from the same counters and draws the same random numbers.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)


@dataclass
class TrainerState:
    """Counters saved with every checkpoint; `batches_in_epoch` counts micro-batches, not optimizer steps."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    samples_seen: int = 0
    bad_samples: int = 0
    seed: int = 0
    num_processes: int = 0  # of the run that saved it (0 in checkpoints older than this field)

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key, value in state.items():
            setattr(self, key, int(value))


class GeneratorState:
    """Checkpointable generator that draws masks and hard negatives, one stream per rank.

    Only the main process writes state files, so every rank's state is gathered into the file; a resume on a different number of processes reseeds from (seed, step, rank) instead.
    """

    def __init__(self, generator: torch.Generator, seed: int, trainer_state: TrainerState) -> None:
        self.generator = generator
        self.seed = seed
        self.trainer_state = trainer_state

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        own = self.generator.get_state()
        if not (dist.is_available() and dist.is_initialized()):
            return {"per_rank": [own]}
        states: list[torch.Tensor | None] = [None] * dist.get_world_size()
        dist.all_gather_object(states, own)
        return {"per_rank": states}

    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if len(state["per_rank"]) == world:
            self.generator.set_state(state["per_rank"][rank])
        else:
            logger.warning("resuming on %d processes from a %d-process checkpoint: reseeding mask RNG", world,
                           len(state["per_rank"]))
            self.generator.manual_seed(self.seed + 1000 * self.trainer_state.step + rank)


class SharedGeneratorState:
    """Checkpointable generator whose state is identical on every rank (the task's global-batch draws)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["state"])




# ----- on disk, without pickle -----
# Accelerate saves registered objects with torch.save and loads them with weights_only=False, which runs any code a
# rewritten file carries. The Trainer's own state is therefore written here instead: tensors (generator states) to
# safetensors, everything else to JSON; nothing read back can execute.
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"


def _split(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {name: _split(item, f"{key}.{name}", tensors) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(item, f"{key}.{index}", tensors) for index, item in enumerate(value)]
    return value


def _join(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict) and set(value) == {"__tensor__"}:
        return tensors[value["__tensor__"]]
    if isinstance(value, dict):
        return {name: _join(item, tensors) for name, item in value.items()}
    if isinstance(value, list):
        return [_join(item, tensors) for item in value]
    return value


def save_states(objects: dict[str, Any], directory: Path, write: bool) -> None:
    """Every rank calls this (state_dict may gather across ranks); only the writer writes."""
    tensors: dict[str, torch.Tensor] = {}
    described = {name: _split(obj.state_dict(), name, tensors) for name, obj in objects.items()}
    if write:
        save_file(tensors, str(directory / STATE_TENSORS))
        (directory / STATE_JSON).write_text(json.dumps(described, indent=1) + "\n")


def load_states(objects: dict[str, Any], directory: Path) -> None:
    described = json.loads((directory / STATE_JSON).read_text())
    tensors = load_file(str(directory / STATE_TENSORS))
    missing = sorted(set(objects) - set(described))
    if missing:
        raise KeyError(f"{directory / STATE_JSON} has no state for {', '.join(missing)}")
    for name, obj in objects.items():
        obj.load_state_dict(_join(described[name], tensors))
