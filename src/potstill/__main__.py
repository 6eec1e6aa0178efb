"""`python -m potstill ...`, as `accelerate launch -m potstill train RUN` runs it."""

from potstill.cli import main

main()
