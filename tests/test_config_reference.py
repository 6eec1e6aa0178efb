"""docs/config.md and `potstill schema` come from the config models."""

import json

from pydantic import BaseModel
from typer.testing import CliRunner

from potstill.cli import app
from potstill.config import RunConfig, _models_in
from potstill.config_reference import DOC_PATH, render, sections


def _all_models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    seen.add(model)
    for info in model.model_fields.values():
        for sub in _models_in(info.annotation):
            if sub not in seen:
                _all_models(sub, seen)
    return seen


def test_docs_config_md_is_up_to_date_with_the_models() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/config.md is out of date with src/potstill/config.py: "
        "run `python -m potstill.config_reference`"
    )


def test_every_key_has_a_description() -> None:
    missing = [
        f"{model.__name__}.{name}"
        for model in _all_models(RunConfig, set())
        for name, info in model.model_fields.items()
        if not info.description
    ]
    assert missing == [], f"add Field(description=...) to {missing}"


def test_every_key_of_every_section_is_in_the_reference() -> None:
    page = render()
    found = {s.path: {row[0] for row in s.rows} for s in sections()}
    assert set(found["dataset"]) == set(RunConfig.model_fields["dataset"].annotation.model_fields)  # type: ignore[union-attr]
    assert "students[].train" in found and "dev_fraction" in found["students[].train"]
    assert "| `dev_fraction` | number (≥ 0.0, < 0.5) | `0.05` |" in page
    # A section's default is its own where it differs from the model's: the teacher asks cot.
    teacher_style = next(
        r for r in next(s for s in sections() if s.path == "teacher.prompt").rows if r[0] == "style"
    )
    assert teacher_style[2] == '`"cot"`'
    synth_style = next(
        r for r in next(s for s in sections() if s.path == "synth.prompt").rows if r[0] == "style"
    )
    assert synth_style[2] == '`"zero_shot"`'


def test_schema_command_prints_the_models_json_schema() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema == json.loads(json.dumps(RunConfig.model_json_schema()))
    train = schema["$defs"]["TrainConfig"]["properties"]["dev_fraction"]
    assert train["default"] == 0.05 and "eval loss" in train["description"]
    assert schema["$defs"]["DatasetConfig"]["additionalProperties"] is False
    # A student's data may be a preset name, as the config accepts.
    data = schema["$defs"]["StudentConfig"]["properties"]["data"]["anyOf"]
    assert {"enum": ["gold", "teacher_answer", "teacher_rationale"]} in data
