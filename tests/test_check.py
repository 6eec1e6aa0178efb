"""`potstill check`: every problem a run would meet before its first model call, at once."""

import json
from pathlib import Path

import pytest
from review_task import REVIEWS
from typer.testing import CliRunner

from potstill.check import check_config
from potstill.cli import app


def _data(folder: Path) -> Path:
    path = folder / "reviews.jsonl"
    rows = [{"review": text, "label": label} for text, label in REVIEWS.items()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


FIVE_MISTAKES = """\
name: reviews
task: {kind: classification, labels: [positive, negative]}
dataset:
  path: reviews.jsonl
  fields: {text: revue}                       # 1: no such column (it is `review`)
  test_size: 4
teacher:
  model: {backend: openai, model: big, base_url: "http://127.0.0.1:9/v1",
          api_key_env: POTSTILL_TEST_UNSET_KEY}  # 2: the variable is not set
  prompt:
    style: cot
    shots:
      - inputs: {review: "Great."}            # 3: the task's input is `text`
        answer: positive
students:
  - name: distilled
    train: {epochs: 0}                        # 4: must be above 0
judge:
  sample_siz: 3                               # 5: a typo of sample_size
"""


def test_five_different_mistakes_are_all_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POTSTILL_TEST_UNSET_KEY", raising=False)
    _data(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(FIVE_MISTAKES)
    result = CliRunner().invoke(app, ["check", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "5 problem(s) found" in out
    assert "field 'revue' (the task's 'text') is missing" in out and "reviews.jsonl:1" in out
    assert "teacher.model.api_key_env: the environment variable POTSTILL_TEST_UNSET_KEY" in out
    assert "teacher.prompt.shots.0.inputs: input is missing field(s) ['text']" in out
    assert "students.0.train.epochs: Input should be greater than 0" in out
    assert "judge.sample_siz: unknown key; did you mean `sample_size`?" in out
    assert out.count("error:") == 5 and "Traceback" not in out
    assert not (tmp_path / "runs").exists()


def test_an_override_mistake_names_the_command_line(tmp_path: Path) -> None:
    _data(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: r\ntask: {kind: classification, labels: [positive, negative]}\n"
        "dataset: {path: reviews.jsonl, fields: {text: review}, test_size: 4}\n"
    )
    found = check_config(config, ["dataset.test_size=lots"], tmp_path)
    assert len(found.problems) == 1
    assert "from the command-line override 'dataset.test_size=lots'" in found.problems[0]
    clean = check_config(config, ["dataset.test_size=3"], tmp_path)
    assert clean.problems == [] and clean.split is not None and len(clean.split.test) == 3


def test_a_bad_template_and_a_split_too_large_are_named(tmp_path: Path) -> None:
    _data(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: r\ntask: {kind: classification, labels: [positive, negative],\n"
        "  templates: {user: '{{ txt }}'}}\n"
        "dataset: {path: reviews.jsonl, fields: {text: review}, test_size: 12}\n"
    )
    found = check_config(config, None, tmp_path)
    assert (
        len(found.problems) == 1
        and "task.templates.user: unknown template variable" in (found.problems[0])
    )
    fixed = check_config(config, ['task.templates.user="{{ text }}"'], tmp_path)
    assert len(fixed.problems) == 1 and "dataset.test_size 12" in fixed.problems[0]


def test_templates_that_fail_to_render_are_each_a_problem(tmp_path: Path) -> None:
    # Before: check rendered only the first training row and knew no bounds, so a template
    # that recursed or looped without end crashed it or ran for minutes.
    _data(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: r\ntask: {kind: classification, labels: [positive, negative], templates: {\n"
        "  cot: {user: '{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}'},\n"
        "  zero_shot: {system: '{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% endfor %}{% endfor %}'}}}\n"
        "dataset: {path: reviews.jsonl, fields: {text: review}, test_size: 4}\n"
        "teacher: {prompt: {style: cot}}\n"
    )
    found = check_config(config, None, tmp_path)
    assert len(found.problems) == 2, found.problems
    recursion, loops = sorted(found.problems)
    assert f"{config}: task.templates.cot.user: the template failed" in recursion
    assert "recursion too deep" in recursion and "rendering teacher.prompt" in recursion
    assert f"{config}: task.templates.zero_shot.system: the template failed" in loops
    assert "more than 200,000 loop iterations" in loops
    assert not (tmp_path / "runs").exists()


def test_a_worked_example_that_is_a_transfer_example_is_a_problem_and_sets_are_shown(
    tmp_path: Path,
) -> None:
    data = _data(tmp_path)
    first = json.loads(data.read_text().splitlines()[0])
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"body": first["review"], "verdict": first["label"]}) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: r\ntask: {kind: classification, labels: [positive, negative]}\n"
        "dataset: {path: reviews.jsonl, fields: {text: review, answer: label}, test_size: 4}\n"
        "teacher:\n  prompt:\n    shots:\n"
        f"      - {{inputs: {{text: {json.dumps(first['review'])}}}, answer: positive}}\n"
        "evaluate:\n  transfer:\n"
        "    - {name: other, path: other.jsonl, fields: {text: body, answer: verdict}}\n"
    )
    found = check_config(config, None, tmp_path)
    assert len(found.problems) == 1
    assert (
        "a worked example repeats an evaluation example: teacher.prompt.shots.0"
        in (found.problems[0])
    )
    assert "has the same words as transfer set 'other' example" in found.problems[0]
    assert list(found.transfer) == ["other"] and len(found.transfer["other"]) == 1


def test_a_typo_in_a_section_does_not_hide_that_sections_other_problems(tmp_path: Path) -> None:
    """An unknown key is dropped and the section is still checked: the dataset with a typo
    still has its missing column found, the task with a typo its bad template."""
    _data(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: r\n"
        "task: {kind: classification, labels: [positive, negative], descripton: Reviews.,\n"
        "  templates: {user: '{{ txt }}'}}\n"
        "dataset: {path: reviews.jsonl, fields: {text: revue}, tset_size: 4}\n"
        "judgee: {enabled: false}\n"
    )
    found = check_config(config, None, tmp_path)
    text = "\n".join(found.problems)
    assert "task.descripton: unknown key; did you mean `description`?" in text
    assert "dataset.tset_size: unknown key; did you mean `test_size`?" in text
    assert "judgee: unknown key; did you mean `judge`?" in text
    assert "task.templates.user: unknown template variable" in text
    assert len(found.problems) == 4, text
    fixed = check_config(config, ['task.templates.user="{{ text }}"'], tmp_path)
    missing = [p for p in fixed.problems if "field 'revue' (the task's 'text') is missing" in p]
    assert len(missing) == 1 and len(fixed.problems) == 4, fixed.problems


def _math_config(folder: Path, calculator: bool, answers: list[str]) -> Path:
    shots = "".join(
        f'      - {{inputs: {{question: "Ann has {i + 3} pens and gets 5 more."}}, '
        f'reason: "Add.", answer: "{answer}"}}\n'
        for i, answer in enumerate(answers)
    )
    config = folder / f"math-{calculator}.yaml"
    config.write_text(
        "name: sums\n"
        f"task: {{kind: math, calculator: {str(calculator).lower()}}}\n"
        "dataset: {generator: {size: 24, seed: 5}, test_size: 8}\n"
        "teacher:\n"
        '  model: {backend: openai, model: big, base_url: "http://127.0.0.1:9/v1"}\n'
        f"  prompt:\n    style: cot\n    shots:\n{shots}"
    )
    return config


def test_a_worked_example_is_held_to_the_rule_a_teacher_reply_meets(tmp_path: Path) -> None:
    # Before: check held a shot's answer to the dataset's reference rule, so with the
    # calculator on, "14 + 5" (the answer format the prompt asks for) was "not a number".
    answers = ["14 + 5", "8", "3 * 4"]
    with_calculator = check_config(_math_config(tmp_path, True, answers), None, tmp_path)
    assert with_calculator.problems == []
    without = check_config(_math_config(tmp_path, False, answers), None, tmp_path)
    shot_problems = [p for p in without.problems if ".shots." in p]
    assert [p.split(": ", 1)[1].split(":")[0] for p in shot_problems] == [
        "teacher.prompt.shots.0.answer",
        "teacher.prompt.shots.2.answer",
    ]
    assert "'14 + 5' is not an answer the task reads from a cot reply" in shot_problems[0]
    unreadable = check_config(_math_config(tmp_path, True, ["many"]), None, tmp_path)
    assert [p for p in unreadable.problems if "shots.0.answer: 'many'" in p] != []
