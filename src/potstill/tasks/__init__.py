"""Task kinds: prompts, reply parsing and scoring."""

from __future__ import annotations

from collections.abc import Callable

from potstill.config import TaskConfig
from potstill.tasks.base import Example, Metric, Parsed, Task
from potstill.tasks.classification import ClassificationTask
from potstill.tasks.conversation import ConversationTask
from potstill.tasks.math import MathTask
from potstill.tasks.multiple_choice import MultipleChoiceTask
from potstill.tasks.summarization import SummarizationTask

__all__ = ["KINDS", "Example", "Metric", "Parsed", "Task", "build_task"]

KINDS: dict[str, Callable[[TaskConfig], Task]] = {
    "classification": ClassificationTask,
    "multiple_choice": MultipleChoiceTask,
    "math": MathTask,
    "summarization": SummarizationTask,
    "conversation": ConversationTask,
}


def build_task(config: TaskConfig) -> Task:
    """The task a config names; template problems are a ConfigError naming the key."""
    return KINDS[config.kind](config)
