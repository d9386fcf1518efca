"""Training state that is not model or optimizer: the Trainer's counters and its random generators.

Each object has `state_dict` / `load_state_dict`, so Accelerate saves it with every checkpoint and a resumed run
continues from the same counters and draws the same random numbers.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

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

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key, value in state.items():
            setattr(self, key, int(value))


class GeneratorState:
    """Checkpointable generator that draws masks and hard negatives, one stream per rank.

    Accelerate writes custom state from the main process only, so every rank's state is gathered into the
    file; a resume on a different number of processes reseeds from (seed, step, rank) instead.
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


