"""The command line itself: version, and help a person can read."""

import pytest
from typer.testing import CliRunner

from potstill import __version__
from potstill.cli import app


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"potstill {__version__}"


@pytest.mark.parametrize("command", [[], ["grade"], ["synth"], ["run"]])
def test_help_shows_flags_without_a_bool_type(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "--help" in result.output
    assert "<bool>" not in result.output
    if command == ["grade"]:  # options that take a value still show its type
        assert "<int range> [1<=x<=65535]" in result.output and "--summary" in result.output
