from pathlib import Path

import pytest

from potstill.config import ModelConfig, StudentConfig, TrainConfig
from potstill.runs import RunFolder, read_jsonl, write_jsonl
from potstill.train.stage import build_trainer, train_student

ROWS = [
    {
        "id": str(i),
        "prompt": [
            {"role": "system", "content": "Solve it."},
            {"role": "user", "content": f"Tom has {i} apples and buys 2 more."},
        ],
        "completion": [{"role": "assistant", "content": f"{i} + 2"}],
    }
    for i in range(6)
]


def _run(tmp_path: Path) -> RunFolder:
    run = RunFolder(tmp_path / "run")
    write_jsonl(run.synth_dir / "train.jsonl", ROWS)
    return run


def _student(model_dir: Path, method: str) -> StudentConfig:
    return StudentConfig(
        name="s",
        base=ModelConfig(model=str(model_dir)),
        train=TrainConfig(method=method, epochs=1, batch_size=2, learning_rate=1e-2, save_steps=2),  # type: ignore[arg-type]
    )


def test_loss_covers_the_reply_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer, tokenizer, _ = build_trainer(_run(tmp_path), _student(tiny_model_dir, "lora"))
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]
    reply = tokenizer.decode([t for t, label in zip(ids, labels) if label != -100])
    prompt = tokenizer.decode([t for t, label in zip(ids, labels) if label == -100])
    assert reply.startswith("0 + 2") and reply.rstrip("\n").endswith("<|im_end|>")
    assert "Tom has 0 apples" in prompt and "0 + 2" not in prompt


@pytest.mark.parametrize("method", ["lora", "full"])
def test_training_writes_a_loadable_standalone_model(
    tiny_model_dir: Path, tmp_path: Path, method: str
) -> None:
    from transformers import AutoModelForCausalLM

    run = _run(tmp_path)
    summary = train_student(run, _student(tiny_model_dir, method))
    final = run.student_dir("s") / "final"
    assert summary["steps"] == 3 and summary["rows"] == 6
    assert (final / "config.json").exists() and (final / "tokenizer.json").exists()
    assert not (run.student_dir("s") / "checkpoints").exists()
    assert (run.student_dir("s") / "adapter").exists() == (method == "lora")
    model = AutoModelForCausalLM.from_pretrained(final)  # merged: no peft needed to load
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = any(
        (a != b).any() for a, b in zip(model.state_dict().values(), base.state_dict().values())
    )
    assert changed
    assert any("loss" in entry for entry in read_jsonl(run.student_dir("s") / "train_log.jsonl"))
