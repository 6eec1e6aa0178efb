"""Task kinds: prompts, reply parsing and scoring."""

from __future__ import annotations

from potstill.config import TaskConfig
from potstill.tasks.base import Example, Parsed, Task
from potstill.tasks.classification import ClassificationTask
from potstill.tasks.math import MathTask

__all__ = ["Example", "Parsed", "Task", "build_task"]


def build_task(config: TaskConfig) -> Task:
    if config.kind == "math":
        return MathTask(config)
    return ClassificationTask(config)
