"""potstill: distill a teacher LLM into a small student for one task, with evidence."""

__version__ = "0.1.0"
