"""The two bases of errors a user can reach, and who may import them from where."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from potstill.config import ConfigError
from potstill.data.loading import DatasetError
from potstill.errors import DamagedRunFile, StageIncomplete, UserError
from potstill.grade.rounds import GradeError
from potstill.models.openai_backend import EndpointRefused, MissingKeyError
from potstill.models.packaged import ModelRefError
from potstill.runs import RunLocked, StageFailed, StageOrderError
from potstill.train.lint import TrainingDataError

SRC = Path(__file__).resolve().parents[1] / "src" / "potstill"


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ConfigError, ValueError),
        (DatasetError, ValueError),
        (ModelRefError, ValueError),
        (MissingKeyError, ValueError),
        (EndpointRefused, RuntimeError),
        (GradeError, ValueError),
        (RunLocked, RuntimeError),
        (StageOrderError, ValueError),
        (StageFailed, ValueError),
        (DamagedRunFile, ValueError),
        (TrainingDataError, ValueError),
    ],
)
def test_every_user_error_has_the_one_base_and_keeps_its_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, UserError)
    assert issubclass(error, builtin)  # code that catches the builtin still does
    assert not issubclass(error, StageIncomplete)


def test_an_incomplete_stage_is_no_user_error() -> None:
    assert not issubclass(StageIncomplete, UserError)


def test_the_cli_takes_its_exception_classes_from_one_module() -> None:
    tree = ast.parse((SRC / "cli.py").read_text())
    sources = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and any(
            alias.name[0].isupper() and alias.name.endswith(("Error", "Incomplete"))
            for alias in node.names
        )
    }
    assert sources == {"potstill.errors", "potstill.config"}  # ConfigError is raised there


def test_models_and_the_grade_store_name_sqlite_errors_without_the_run_folder() -> None:
    code = (
        "import sys, potstill.models.callstore, potstill.models.ledger, potstill.grade.store;"
        "print('potstill.runs' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
