"""The Hugging Face Hub cards of a run: the synthetic training set's dataset card and a
student's model card. Both say where they came from: the teacher and its prompts, the filters
and what they kept, the cost, the licence, the exact potstill version and the whole config;
the model card holds the report's own comparison table (with its intervals) and verdict, and
the training settings."""

from __future__ import annotations

from typing import Any

import yaml

from potstill import __version__
from potstill.config import RunConfig, StudentConfig
from potstill.export import student_system_prompt
from potstill.records import Scores, SynthSummary, TrainSummary, read_record
from potstill.report.stage import comparison_markdown
from potstill.report.verdict import INTERVAL_NOTE, verdicts
from potstill.runs import RunFolder


def _front_matter(fields: dict[str, Any]) -> str:
    """The card's YAML header, which the Hub reads (licence, tags, data files)."""
    kept = {k: v for k, v in fields.items() if v not in (None, [], "")}
    return "---\n" + yaml.safe_dump(kept, sort_keys=False, allow_unicode=True) + "---\n"


def _yaml_block(data: Any) -> list[str]:
    return ["```yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip(), "```"]


def _versions(run: RunFolder) -> list[str]:
    manifest = run.manifest()
    made = manifest.versions or {}
    return [
        f"- made with potstill {made.get('potstill', 'unknown')} "
        f"({', '.join(f'{k} {v}' for k, v in made.items() if k != 'potstill')}); "
        f"pushed with potstill {__version__}",
        f"- config hash: `{manifest.config_hash or 'unknown'}`",
    ]


def _is_hub_id(model: str) -> bool:
    """A hub id (org/name), not a local folder or a packaged: reference."""
    return model.count("/") == 1 and not model.startswith(("/", ".", "packaged:", "~"))


def _prompt_lines(config: RunConfig) -> list[str]:
    teacher = config.teacher.prompt
    custom = config.task.templates.model_dump(exclude_none=True) != {}
    lines = [
        f"- teacher prompt: style `{teacher.style}`, {len(teacher.shots)} worked examples, "
        f"temperature {teacher.temperature:g}, at most {teacher.max_tokens} tokens",
        f"- student prompt: style `{config.synth.prompt.style}`",
        "- templates: "
        + ("the config's own (task.templates, below)" if custom else "potstill's defaults"),
    ]
    return lines


def _demoted(markdown: str) -> list[str]:
    """Markdown one heading level down, to sit under a heading of the card."""
    return [f"#{line}" if line.startswith("#") else line for line in markdown.rstrip().splitlines()]


def _fenced(text: str, info: str = "text") -> list[str]:
    """Text in a fence longer than any run of `~` a line of it starts with."""
    runs = [len(line) - len(line.lstrip("~")) for line in text.splitlines()]
    fence = "~" * max(3, 1 + max(runs, default=0))
    return [fence + info, text, fence]


def _teacher_messages(run: RunFolder, config: RunConfig) -> list[str]:
    """The exact messages the teacher was sent for the first training input."""
    from potstill.data.loading import read_examples
    from potstill.tasks import build_task

    examples = read_examples(run.data_dir / "train.jsonl")[:1]
    if not examples:
        return []
    messages = build_task(config.task).messages(examples[0].inputs, config.teacher.prompt)
    body = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
    return ["## Teacher prompt (first training input)", "", *_fenced(body), ""]


def dataset_card(run: RunFolder, config: RunConfig, repo: str, license_id: str, rows: int) -> str:
    """README.md of the dataset repo: provenance first, then synth/card.md (yield per
    reason, teacher accuracy, cost, warnings, rejected examples) as the synth stage wrote it."""
    summary = read_record(run.synth_dir / "summary.json", SynthSummary)
    synth_card = (run.synth_dir / "card.md").read_text("utf-8")
    teacher = config.teacher.model
    inputs = summary.inputs + summary.generated_inputs
    header = _front_matter(
        {
            "license": license_id,
            "pretty_name": f"{config.name} (potstill synthetic data)",
            "tags": ["potstill", "distillation", "synthetic", config.task.kind],
            "task_categories": ["text-generation"],
            "configs": [
                {
                    "config_name": "default",
                    "data_files": [{"split": "train", "path": "data/train.jsonl"}],
                }
            ],
        }
    )
    lines = [
        f"# {repo}",
        "",
        f"{rows} training rows for a **{config.task.kind}** task, labelled by the teacher "
        f"`{teacher.model}` and kept by potstill's filters; TRL conversational "
        "prompt/completion rows (`data/train.jsonl`).",
        "",
        "## Provenance",
        "",
        f"- teacher: `{teacher.model}` ({teacher.backend}"
        + (f", {teacher.base_url}" if teacher.base_url else "")
        + ")",
        *_prompt_lines(config),
        f"- filters: {_filters_line(config)}",
        f"- yield: {summary.accepted} of {inputs} inputs kept (table below)",
        f"- licence: `{license_id}` (the dataset's and the teacher's terms both apply)",
        *_versions(run),
        "",
        *_demoted(synth_card),
        "",
        *_teacher_messages(run, config),
        "## Config",
        "",
        "The run's whole config (API keys are never in it: only the names of their variables).",
        "",
        *_yaml_block(config.model_dump(mode="json")),
        "",
    ]
    return header + "\n" + "\n".join(lines)


def _filters_line(config: RunConfig) -> str:
    synth = config.synth
    return ", ".join(
        f"{key} {value}"
        for key, value in synth.model_dump(mode="json").items()
        if key not in ("prompt", "generate")
    )


def _training_lines(student: StudentConfig, summary: TrainSummary) -> list[str]:
    figures = {
        "rows": summary.rows,
        "dev rows": summary.dev_rows,
        "optimizer steps": summary.steps,
        "final training loss": summary.train_loss,
        "dev loss": summary.eval_loss,
        "seconds": summary.seconds,
    }
    table = ["| figure | value |", "|---|---|"]
    table += [f"| {k} | {'n/a' if v is None else f'{v:.4g}'} |" for k, v in figures.items()]
    return [
        f"Fine-tuned from `{student.base.model}` ({student.train.method}) with TRL's SFTTrainer.",
        "",
        *table,
        "",
        "Settings (`students.*.train`):",
        "",
        *_yaml_block(student.train.model_dump(mode="json")),
    ]


def _verdict_lines(scores: dict[str, Any], name: str) -> list[str]:
    test = verdicts(scores)[0]
    lines = []
    for block in test.students:
        if block.head.startswith(f"{name}:"):
            lines += [f"- {block.head}", *[f"  - {line}" for line in block.lines]]
    return lines + [f"\n{note}" for note in test.notes]


def model_card(
    run: RunFolder,
    config: RunConfig,
    student: StudentConfig,
    repo: str,
    license_id: str,
    weights: str,
    dataset_repo: str | None,
) -> str:
    """README.md of the model repo: the verdict and the report's comparison table (every
    candidate, every metric with its 95% interval), the training settings and figures, the
    prompt it expects, and where it came from."""
    scores = read_record(run.eval_dir / "scores.json", Scores).as_written()
    summary = read_record(run.student_dir(student.name) / "summary.json", TrainSummary)
    base = student.base.model
    header = _front_matter(
        {
            "license": license_id,
            "base_model": base if _is_hub_id(base) else None,
            "library_name": "peft" if weights == "adapter" else "transformers",
            "pipeline_tag": "text-generation",
            "datasets": [dataset_repo] if dataset_repo else [],
            "tags": ["potstill", "distillation", config.task.kind],
        }
    )
    system = student_system_prompt(run, config)
    what = "LoRA adapter" if weights == "adapter" else "standalone model (LoRA merged)"
    lines = [
        f"# {repo}",
        "",
        f"Student `{student.name}` of the potstill run `{config.name}`: a {what} distilled from "
        f"the teacher `{config.teacher.model.model}` for a **{config.task.kind}** task"
        + (
            f", trained on [{dataset_repo}](https://huggingface.co/datasets/{dataset_repo})"
            if dataset_repo
            else ""
        )
        + ".",
        "",
        "## Verdict (test split)",
        "",
        *_verdict_lines(scores, student.name),
        "",
        INTERVAL_NOTE,
        "",
        "## Evaluation (test split)",
        "",
        comparison_markdown(scores),
        "",
        "## Training",
        "",
        *_training_lines(student, summary),
        "",
        "## Prompt",
        "",
        f"Asked as it was trained and evaluated: style `{config.synth.prompt.style}`, "
        f"temperature {config.synth.prompt.temperature:g}, at most "
        f"{config.synth.prompt.max_tokens} tokens"
        + (
            ", with this system prompt:"
            if system
            else " (no system prompt the same for every input)."
        ),
        "",
        *([*_fenced(system), ""] if system else []),
        "## Provenance",
        "",
        f"- licence: `{license_id}` (the base model's, the data's and the teacher's terms apply)",
        *_versions(run),
        "",
    ]
    return header + "\n" + "\n".join(lines)
