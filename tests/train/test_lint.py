"""The lint runs on TRL's own tokenization of the rows, with templates broken on purpose."""

import json
import shutil
from pathlib import Path

import pytest

from potstill.config import ModelConfig, StudentConfig, TrainConfig
from potstill.train.lint import TrainingDataError, lint_row
from potstill.train.stage import build_trainer

REASON = 'Tom "gives away" 9, so subtract.'
ROWS = [
    {
        "id": f"r{i}",
        "prompt": [
            {"role": "system", "content": "Solve it."},
            {"role": "user", "content": f"Tom has {20 + i} stickers and gives away 9."},
        ],
        "completion": [
            {"role": "assistant", "content": json.dumps({"reason": REASON, "answer": "22 - 9"})}
        ],
        "rationale": REASON,
    }
    for i in range(4)
]

TURN = "{{'<|im_start|>' + message['role'] + '\n' + CONTENT + END + '\n'}}"
GEN = "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
ANSWER_ONLY = (
    "('{\"answer\": ' + message['content'].split('\"answer\": ')[1])"
    " if message['role'] == 'assistant' else message['content']"
)
END_UNLESS_ASSISTANT = "('' if message['role'] == 'assistant' else '<|im_end|>')"


def _template(
    content: str = "message['content']", end: str = "'<|im_end|>'", skip: str = ""
) -> str:
    turn = TURN.replace("CONTENT", f"({content})").replace("END", end)
    if skip:
        turn = f"{{% if message['role'] != '{skip}' %}}{turn}{{% endif %}}"
    return "{% for message in messages %}" + turn + "{% endfor %}" + GEN


def _student(model_dir: Path) -> StudentConfig:
    return StudentConfig(
        name="s", base=ModelConfig(model=str(model_dir)), train=TrainConfig(dev_fraction=0.0)
    )


def _with_template(model_dir: Path, tmp_path: Path, template: str) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (folder / "chat_template.jinja").write_text(template)
    return folder


def test_rows_through_the_real_template_pass(tiny_model_dir: Path, tmp_path: Path) -> None:
    prep = build_trainer(_student(tiny_model_dir), ROWS, tmp_path / "ckpt")
    assert prep.rows == 4


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (_template(skip="assistant"), "the loss mask is empty"),
        (_template(end=END_UNLESS_ASSISTANT), "lacks the end-of-turn token"),
        (_template(content=ANSWER_ONLY), "drops the rationale"),
    ],
    ids=["assistant-dropped", "no-end-of-turn", "rationale-dropped"],
)
def test_a_broken_template_stops_training_before_it_starts(
    tiny_model_dir: Path, tmp_path: Path, template: str, message: str
) -> None:
    model_dir = _with_template(tiny_model_dir, tmp_path, template)
    with pytest.raises(TrainingDataError, match=message) as err:
        build_trainer(_student(model_dir), ROWS, tmp_path / "ckpt")
    assert "row r0" in str(err.value)


def test_a_mask_that_covers_the_prompt_is_caught(smollm2_tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    row = ROWS[0]
    ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    problem = lint_row(tokenizer, row, ids, ids, {tokenizer.eos_token_id})
    assert problem is not None and "covers" in problem and "prompt token" in problem
