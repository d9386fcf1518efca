"""Task registry keyed by name: duplicates raise, unknown names raise with the list of known ones."""
from __future__ import annotations

from typing import Callable

TASKS: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        if name in TASKS:
            raise KeyError(f"task {name!r} is registered twice ({TASKS[name].__name__} and {cls.__name__})")
        cls.name = name
        TASKS[name] = cls
        return cls

    return add


def get_task(name: str) -> type:
    import violet.tasks  # noqa: F401  (importing the package registers every task)

    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[name]
