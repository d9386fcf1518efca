"""Tasks (pretrain, retrieval, qa-mc, qa-oe); importing this package registers them."""
from violet.tasks import pretrain, qa_mc, qa_oe, retrieval  # noqa: F401
from violet.tasks.registry import TASKS, get_task, register

__all__ = ["TASKS", "get_task", "register"]
