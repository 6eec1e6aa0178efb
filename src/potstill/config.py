"""Run configuration: one YAML file, validated by pydantic, with `key=value` overrides."""

from __future__ import annotations

import difflib
import hashlib
import json
import string
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from potstill.errors import UserError


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message names the file and the key."""


class Strict(BaseModel):
    # inf and nan are never meant: `epochs: .inf` would train forever.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# A name becomes a folder (runs/<name>, students/<name>): letters, digits, `_`, `.`, `-`, and
# not only dots, since `.` and `..` would put the files in another folder.
FOLDER_NAME = r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$"


class BatchConfig(Strict):
    """`mode: batch`: how the synth stage's teacher calls go through the endpoint's
    OpenAI-style Batch API (files and batches; see docs/integrations.md)."""

    price_per_million_input: float | None = Field(
        None,
        ge=0,
        description="batch: dollars per million prompt tokens (often half the online price); "
        "unset: the online price.",
    )
    price_per_million_output: float | None = Field(
        None,
        ge=0,
        description="batch: dollars per million completion tokens; unset: the online price.",
    )
    url: str = Field(
        "/v1/chat/completions",
        description="batch: the endpoint each request line names (Azure OpenAI: "
        "/chat/completions).",
    )
    completion_window: str = Field(
        "24h", min_length=1, description="batch: the window a batch is given to finish."
    )
    poll_interval_s: float = Field(
        30.0, gt=0, description="batch: seconds between two looks at a running batch."
    )
    max_requests_per_file: int = Field(
        50_000, ge=1, description="batch: the most requests in one batch (OpenAI: 50,000)."
    )
    max_file_bytes: int = Field(
        200 * 1024 * 1024,
        ge=1024,
        description="batch: the largest input file in bytes (OpenAI: 200 MB).",
    )
    retry_rounds: int = Field(
        2,
        ge=0,
        description="batch: smaller batches of the failed lines (server errors, an expired "
        "batch) sent in the same run before they count as failed calls.",
    )
    folder: str | None = Field(
        None,
        description="batch: run the batches yourself (`vllm run-batch`): each batch's input "
        "file is written to this folder (relative to the run folder) and its output file "
        "awaited there; unset: the endpoint's Batch API.",
    )


# What runs a local model (`models/engines.py`): the one list of engine names. A new engine
# (a CPU one, say) adds its name here and its case to `models.build_model`.
Engine = Literal["auto", "transformers", "vllm", "command"]


ENGINE_PLACEHOLDERS = ("model", "name", "host", "port")


def _check_placeholders(command: list[str]) -> None:
    """An engine command's placeholders are the four potstill fills in, and `{port}` is one
    of them: a server left on its own port would never answer on the one potstill waits on.
    Literal braces are written doubled (`{{`, `}}`)."""
    found: set[str] = set()
    for part in command:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(part) if f is not None]
        except ValueError as exc:
            raise ValueError(
                f"engine_command argument {part!r}: {exc} (write a literal brace as {{{{ or }}}})"
            ) from None
        for name in fields:
            if name not in ENGINE_PLACEHOLDERS:
                known = ", ".join(f"{{{p}}}" for p in ENGINE_PLACEHOLDERS)
                raise ValueError(
                    f"engine_command argument {part!r}: unknown placeholder {{{name}}} "
                    f"(potstill fills in {known}; write a literal brace as {{{{ or }}}})"
                )
            found.add(name)
    if "port" not in found:
        raise ValueError(
            "engine_command has no {port}: potstill picks a free port and waits for the server "
            "there, so the command must pass it (e.g. --port {port})"
        )


class ModelConfig(Strict):
    """Where a chat model lives and how to talk to it."""

    backend: Literal["local", "openai"] = Field(
        "local", description="local: run the model here; openai: an OpenAI-compatible endpoint."
    )
    model: str = Field(
        "packaged:smollm2-135m-instruct",
        description="local: packaged:NAME, a model folder or a hub id; openai: the model name.",
    )
    base_url: str | None = Field(None, description="openai: the endpoint's URL, e.g. .../v1.")
    # The key itself never enters YAML.
    api_key_env: str | None = Field(
        None, description="The name of the environment variable that holds the API key."
    )
    max_concurrency: int = Field(8, ge=1, description="openai: requests in flight at once.")
    batch_size: int = Field(8, ge=1, description="local: inputs generated together.")
    timeout_s: float = Field(120.0, gt=0, description="openai: seconds one request may take.")
    max_retries: int = Field(4, ge=0, description="openai: retries of a failed request.")
    requests_per_minute: float | None = Field(
        None, gt=0, description="openai: a request rate limit; none when unset."
    )
    # Tokens count the prompt estimate plus max_tokens, as providers do.
    tokens_per_minute: float | None = Field(
        None, gt=0, description="openai: a token rate limit (prompt estimate + max_tokens)."
    )
    retry_max_wait_s: float = Field(
        60.0, gt=0, description="openai: the longest single back-off between retries."
    )
    retry_total_s: float = Field(
        600.0, gt=0, description="openai: total seconds one call may spend retrying."
    )
    # The synth stage's cost, its budget and dry-run estimate, and the report's cost per
    # 1,000 requests use the prices. Local models are priced by measured compute time instead
    # (`evaluate.local_price_per_hour`).
    engine: Engine = Field(
        "auto",
        description="local: what runs the model. transformers: in this process; vllm: "
        "`vllm serve` (the vllm extra, a CUDA GPU), started and stopped by potstill; "
        "command: `engine_command`, any OpenAI-compatible server; auto: vllm where it is "
        "installed on a CUDA machine, else transformers.",
    )
    engine_command: list[str] | None = Field(
        None,
        description="local, engine: command: the server's command line, one list item per "
        "argument; {model} (the model folder), {name}, {host} and {port} (a free one) are "
        "filled in, and {port} must be there; a literal brace is written doubled ({{ }}). "
        "Logs go to the run folder's engines/.",
    )
    engine_ready_s: float = Field(
        600.0,
        gt=0,
        description="local, engine vllm or command: seconds the server may take to become "
        "healthy before the stage stops with an error.",
    )

    @model_validator(mode="after")
    def _engine_has_a_command(self) -> ModelConfig:
        if self.engine == "command" and not self.engine_command:
            raise ValueError("`engine: command` needs `engine_command` (the server's command line)")
        if self.engine_command and self.engine != "command":
            raise ValueError("`engine_command` applies to `engine: command` only")
        if self.engine_command:
            _check_placeholders(self.engine_command)
        return self

    price_per_million_input: float | None = Field(
        None, ge=0, description="openai: dollars per million prompt tokens."
    )
    price_per_million_output: float | None = Field(
        None, ge=0, description="openai: dollars per million completion tokens."
    )
    mode: Literal["online", "batch"] = Field(
        "online",
        description="openai, teacher only: online sends each call; batch sends the synth "
        "stage's calls through the endpoint's Batch API (cheaper, answers within a window).",
    )
    batch: BatchConfig = Field(BatchConfig(), description="mode: batch: the Batch API's settings.")

    @model_validator(mode="after")
    def _batch_needs_an_endpoint(self) -> ModelConfig:
        if self.mode == "batch" and self.backend != "openai":
            raise ValueError("mode: batch needs backend: openai (an endpoint with a Batch API)")
        return self


class Shot(Strict):
    """A worked example shown to a model before the real input (few-shot)."""

    inputs: dict[str, str] = Field(description="The example's input fields, by task field name.")
    answer: str = Field(description="The answer, as the model should give it.")
    reason: str | None = Field(None, description="cot: the reasoning shown before the answer.")


class PromptConfig(Strict):
    """How a model is asked: the prompt style, worked examples and sampling."""

    style: Literal["zero_shot", "cot", "chain_of_density"] = Field(
        "zero_shot",
        description='zero_shot; cot: a JSON {"reason", "answer"} reply; chain_of_density: '
        "summaries only (a JSON list of rounds).",
    )
    shots: list[Shot] = Field(
        default_factory=list, description="Worked examples shown before the real input."
    )
    max_tokens: int = Field(64, ge=1, description="The longest reply, in tokens.")
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature; 0 is greedy.")


TaskKind = Literal["classification", "multiple_choice", "math", "summarization", "conversation"]


def _check_template(source: str | None) -> str | None:
    """A Jinja2 template must at least parse; the task checks its variables when it is built."""
    if source is None:
        return None
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    try:
        SandboxedEnvironment().parse(source)
    except TemplateSyntaxError as exc:
        raise ValueError(
            f"not a valid Jinja2 template (line {exc.lineno}: {exc.message})"
        ) from None
    return source


_SYSTEM = "Jinja2 template of the system message; unset: the task's default."
_USER = "Jinja2 template of the user turn; unset: the task's default."


class TemplateConfig(Strict):
    """Jinja2 templates for the system message and the user turn; unset means the default."""

    system: str | None = Field(None, description=_SYSTEM)
    user: str | None = Field(None, description=_USER)

    _valid = field_validator("system", "user")(_check_template)


class TemplatesConfig(Strict):
    """Prompt overrides: `system` / `user` for every style, or per style (`cot: {system: ...}`)."""

    system: str | None = Field(None, description=_SYSTEM + " Every style.")
    user: str | None = Field(None, description=_USER + " Every style.")
    zero_shot: TemplateConfig | None = Field(None, description="Templates for zero_shot only.")
    cot: TemplateConfig | None = Field(None, description="Templates for cot only.")
    chain_of_density: TemplateConfig | None = Field(
        None, description="Templates for chain_of_density only."
    )

    _valid = field_validator("system", "user")(_check_template)


class TaskConfig(Strict):
    """What the models are asked to do, and how a reply is read and scored."""

    kind: TaskKind = Field(
        description="classification, multiple_choice, math, summarization or conversation."
    )
    description: str | None = Field(
        None, description="The instruction in the system message; unset: the kind's default."
    )
    preset: Literal["nli"] | None = Field(
        None,
        description="classification: nli = inputs premise + hypothesis, labels entailment / "
        "neutral / contradiction, with common synonyms.",
    )
    inputs: list[str] | None = Field(
        None,
        min_length=1,
        description="classification, math, summarization: the input field names (defaults "
        "text / question / document); map them to columns in dataset.fields.",
    )
    labels: list[str] | None = Field(
        None,
        description="classification: the label set, matched case- and whitespace-insensitively.",
    )
    synonyms: dict[str, list[str]] = Field(
        default_factory=dict,
        description="classification: other words a reply may use for a label, e.g. "
        "{positive: [good, pos]}.",
    )
    # Applies to every candidate alike; the report says so.
    calculator: bool = Field(
        False,
        description='math: evaluate an arithmetic expression given as the answer ("22 - 9" '
        "-> 13) with a safe calculator.",
    )
    tolerance: float = Field(
        1e-6,
        ge=0.0,
        description="math: an answer is right when |answer - reference| <= tolerance * "
        "max(1, |reference|).",
    )
    summary_words: int = Field(
        60, ge=5, description="summarization: the summary length asked for, in words."
    )
    density_rounds: int = Field(
        3, ge=1, le=8, description="summarization: the rounds of chain of density."
    )
    templates: TemplatesConfig = Field(
        TemplatesConfig(), description="Prompt template overrides (docs/tasks.md)."
    )

    @model_validator(mode="after")
    def _fits_the_kind(self) -> TaskConfig:
        if self.preset is not None and self.kind != "classification":
            raise ValueError("`preset` applies to classification only")
        if self.kind == "classification" and not self.labels and self.preset is None:
            raise ValueError("a classification task needs `labels` (or `preset: nli`)")
        if self.kind != "classification" and (self.labels or self.synonyms):
            raise ValueError("`labels` and `synonyms` apply to classification only")
        if self.inputs is not None and self.kind in ("multiple_choice", "conversation"):
            raise ValueError(f"a {self.kind} task has fixed inputs; map columns in dataset.fields")
        if self.inputs is not None and len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"`inputs` must be unique, got {self.inputs}")
        labels = set(self.labels or [])
        for label in self.synonyms:
            if self.labels and label not in labels:
                raise ValueError(f"synonyms: {label!r} is not one of the labels {self.labels}")
        return self


class GeneratorConfig(Strict):
    """Examples made by one of potstill's generators instead of read from a file."""

    name: Literal["arithmetic_stories"] = Field(
        "arithmetic_stories", description="arithmetic_stories: one-step arithmetic word problems."
    )
    size: int = Field(600, ge=2, description="Examples generated.")
    seed: int = Field(0, description="Seed of the generator.")


class SourceConfig(Strict):
    """An evaluation set's own source: a file, a hub dataset, or another split (or config)
    of the main dataset's hub source, with its own field mapping if its columns differ."""

    path: str | None = Field(
        None,
        description="A .jsonl / .csv / .parquet file (relative to the config), or hf:org/name "
        "for a Hugging Face hub dataset.",
    )
    hub: str | None = Field(
        None,
        description="A hub dataset name (or a local folder of data files) loaded with "
        "datasets.load_dataset.",
    )
    # `{hub_split: validation}`: the official validation split of the training dataset.
    hub_config: str | None = Field(
        None,
        description="The hub dataset's configuration name; with neither path nor hub, another "
        "configuration of the main dataset's hub source.",
    )
    hub_split: str | None = Field(
        None,
        description="The split to read: of its own hub dataset (train when unset), or with "
        "neither path nor hub, another split of the main dataset's hub source.",
    )
    fields: dict[str, str | list[str]] | None = Field(
        None,
        description="Task field -> this set's column, as dataset.fields; unset: the main "
        "dataset's mapping.",
    )
    size: int | None = Field(
        None,
        ge=1,
        description="A seeded sample (dataset.seed) of this many examples; all when unset.",
    )

    @field_validator("path", "hub", "hub_config", "hub_split")
    @classmethod
    def _not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> SourceConfig:
        if self.path is not None and self.hub is not None:
            raise ValueError("give `path` or `hub`, not both")
        if self.main_hub and self.hub_config is None and self.hub_split is None:
            raise ValueError(
                "give `path` (a file), `hub` (a hub dataset) or `hub_split` (another split "
                "of the main dataset's hub source)"
            )
        is_file = self.path is not None and not self.path.startswith("hf:")
        if is_file and (self.hub_config is not None or self.hub_split is not None):
            raise ValueError("`hub_config` and `hub_split` apply to a hub source, not a file")
        return self

    @property
    def own_hub(self) -> str | None:
        """The hub dataset this source names itself (`hub`, or a `path` of the form hf:...)."""
        if self.hub is not None:
            return self.hub
        if self.path is not None and self.path.startswith("hf:"):
            return self.path[3:]
        return None

    @property
    def main_hub(self) -> bool:
        """Whether this source is another split or config of the main dataset's hub source."""
        return self.path is None and self.hub is None


def _source_shorthand(value: Any) -> Any:
    """`test: data/test.jsonl` is `test: {path: data/test.jsonl}`."""
    return {"path": value} if isinstance(value, str) else value


class DatasetConfig(Strict):
    """Where examples come from (exactly one source) and how they split."""

    path: str | None = Field(
        None,
        description="A .jsonl / .csv / .parquet file (relative to the config), or hf:org/name "
        "for a Hugging Face hub dataset.",
    )
    hub: str | None = Field(
        None,
        description="A hub dataset name (or a local folder of data files) loaded with "
        "datasets.load_dataset.",
    )
    hub_config: str | None = Field(None, description="hub: the dataset's configuration name.")
    hub_split: str = Field("train", description="hub: the split to read.")
    generator: GeneratorConfig | None = Field(None, description="A generated dataset.")
    # A list gathers several columns into one field (multiple-choice options in columns A, B,
    # C...).
    fields: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="Task field -> the file's column (or a list of columns); unmapped fields "
        "use the task's own names.",
    )
    test_size: int = Field(
        200, ge=1, description="Examples held out to evaluate on (unless `test` gives them)."
    )
    dev_size: int = Field(
        0,
        ge=0,
        description="Examples held out as a development split, like the test split (unless "
        "`dev` gives them).",
    )
    train_size: int | None = Field(
        None, ge=1, description="At most this many training examples; all the rest when unset."
    )
    seed: int = Field(0, description="Seed of the train/test split.")
    # Far more than any model's context, so a longer cell is a mistake (a whole file in one
    # cell), not an input.
    max_chars: int = Field(
        1_000_000, ge=1, description="The longest input field or reference accepted, in characters."
    )
    test: SourceConfig | None = Field(
        None,
        description="The test split's own source (a benchmark's official test file, or a hub "
        "split such as validation); when given, no test examples are drawn from the main source.",
    )
    dev: SourceConfig | None = Field(
        None,
        description="The dev split's own source, likewise (no dev examples drawn from the main "
        "source).",
    )

    _shorthand = field_validator("test", "dev", mode="before")(_source_shorthand)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        sources = [s for s in (self.path, self.hub, self.generator) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of `path`, `hub` or `generator`")
        # test_size / dev_size draw from the main source; a set of its own replaces them,
        # so a size set beside it is a mistake, not something to ignore.
        defaults = type(self).model_fields
        for part, size in (("test", "test_size"), ("dev", "dev_size")):
            if getattr(self, part) is not None and getattr(self, size) != defaults[size].default:
                raise ValueError(
                    f"`{size}` draws the {part} split from the main source at random; with "
                    f"`{part}` given, the {part} split is that source (sample it with "
                    f"`{part}.size`)"
                )
        for part in ("test", "dev"):
            source = getattr(self, part)
            if source is None:
                continue
            if source.main_hub and self.hub_name is None:
                raise ValueError(
                    f"`{part}` names only a hub split or config, but the main source is not a "
                    f"hub dataset; give `{part}.path` or `{part}.hub`"
                )
            same_file = source.path is not None and source.path == self.path
            same_split = source.main_hub and (
                source.hub_config or self.hub_config,
                source.hub_split or self.hub_split,
            ) == (self.hub_config, self.hub_split)
            if same_file or same_split:
                raise ValueError(
                    f"`{part}` is the training source itself; name another file or split"
                )
        return self

    @property
    def hub_name(self) -> str | None:
        """The hub dataset this config names (`hub`, or a `path` of the form hf:org/name)."""
        if self.hub is not None:
            return self.hub
        if self.path is not None and self.path.startswith("hf:"):
            return self.path[3:]
        return None


class TeacherConfig(Strict):
    """The large model whose answers the students learn from."""

    model: ModelConfig = Field(ModelConfig(), description="The teacher model.")
    prompt: PromptConfig = Field(
        PromptConfig(style="cot", max_tokens=128), description="How the teacher is asked."
    )
    procedure: str | None = Field(
        None, description='A short note on the teacher\'s procedure for the report ("8-shot CoT").'
    )


# The experiment trackers train.report_to passes to TRL (potstill/train/tracking.py).
Tracker = Literal["tensorboard", "trackio", "mlflow", "wandb"]


class TrainConfig(Strict):
    """How a student is fine-tuned (docs/training.md)."""

    method: Literal["lora", "full"] = Field(
        "lora", description="lora: low-rank adapters, merged at the end; full: every weight."
    )
    epochs: float = Field(2.0, gt=0, description="Passes over the training rows.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    batch_size: int = Field(8, ge=1, description="Rows per device per step.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Steps whose gradients add up before one update."
    )
    max_length: int = Field(512, ge=16, description="The longest training row, in tokens.")
    lora_r: int = Field(16, ge=1, description="lora: the adapters' rank.")
    lora_alpha: int = Field(32, ge=1, description="lora: the adapters' scaling.")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="lora: dropout on the adapters.")
    seed: int = Field(0, description="Seed of training (shuffling, initialisation).")
    save_steps: int = Field(50, ge=1, description="Steps between checkpoints.")
    # auto: padding-free batches where the attention kernel takes packed sequences without a
    # dense mask (flash / flex / varlen), else length-grouped batches padded to the longest
    # row. padded: random batches, as TRL's default, kept for comparison.
    batching: Literal["auto", "length_grouped", "padding_free", "padded"] = Field(
        "auto", description="How rows become batches (docs/training.md)."
    )
    attn_implementation: str | None = Field(
        None,
        description="A transformers attention implementation (sdpa, eager, flex_attention, "
        "flash_attention_2, potstill_varlen on a GPU); unset: transformers' default.",
    )
    dev_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=0.5,
        description="Share of rows held out to measure the eval loss on (at least one when "
        "above 0).",
    )
    eval_steps: int | None = Field(
        None,
        ge=1,
        description="Steps between eval-loss measurements; unset: at every checkpoint and at "
        "the end.",
    )
    resume: Literal["auto", "never"] = Field(
        "auto",
        description="auto: continue from the last complete checkpoint made with the same "
        "settings and data; never: start over.",
    )
    report_to: list[Tracker] = Field(
        default_factory=list,
        description="Experiment trackers that get the training curves and, after evaluation, "
        "the student's metrics with their intervals (tensorboard, trackio, mlflow, wandb; "
        "docs/integrations.md); empty: nothing is logged anywhere.",
    )

    @model_serializer(mode="wrap")
    def _trackers_only_when_set(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Unset, the key is left out of dumps, so a run's config copy and the students'
        # fingerprints stay what they were before trackers existed.
        dumped = handler(self)
        if not self.report_to and isinstance(dumped, dict):
            dumped.pop("report_to", None)
        return dumped

    # docs/training.md: the three losses, what each costs and when it is worth it.
    loss: Literal["sft", "kd", "on_policy"] = Field(
        "sft",
        description="sft: cross-entropy on the teacher's text; kd: also the forward KL to the "
        "teacher's top-K token distributions (needs synth.logprobs and a shared tokenizer); "
        "on_policy: the KL alone, on completions the student samples (local teacher).",
    )
    on_policy_samples: int = Field(
        1, ge=1, description="on_policy: completions the student samples per training input."
    )
    on_policy_temperature: float = Field(
        1.0, gt=0.0, description="on_policy: the student's sampling temperature."
    )
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps; unset: epochs decide."
    )
    kd_alpha: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="kd: weight of the KL term; 1 - kd_alpha goes to cross-entropy (tokens "
        "without a teacher distribution get cross-entropy alone).",
    )
    kd_temperature: float = Field(
        1.0, gt=0.0, description="kd: softmax temperature of student and teacher in the KL term."
    )


class StudentData(Strict):
    """Which rows a student learns from; unset fields follow the run's `synth` section."""

    source: Literal["teacher", "gold"] = Field(
        "teacher",
        description="teacher: the teacher's accepted replies; gold: the dataset's own "
        "references (no rationale).",
    )
    target: Literal["answer", "rationale_answer"] | None = Field(
        None, description="What the student learns to write; unset: synth.target."
    )
    require_reference_match: bool | None = Field(
        None,
        description="Only teacher replies that agree with the reference; unset: "
        "synth.require_reference_match.",
    )

    @model_validator(mode="after")
    def _gold_has_no_rationale(self) -> StudentData:
        if self.source == "gold" and self.target == "rationale_answer":
            raise ValueError("gold references carry no rationale; use target: answer")
        return self


# The method's comparison (arXiv 2410.18588): the same student trained on the dataset's labels,
# on the teacher's answers, and on the teacher's reasoning plus answer.
DATA_PRESETS: dict[str, dict[str, Any]] = {
    "gold": {"source": "gold", "target": "answer"},
    "teacher_answer": {"source": "teacher", "target": "answer"},
    "teacher_rationale": {"source": "teacher", "target": "rationale_answer"},
}


def _data_presets_in_schema(schema: dict[str, Any]) -> None:
    """A preset name is a string the validator below expands: editors should accept it."""
    schema["anyOf"] = [*schema.get("anyOf", []), {"enum": list(DATA_PRESETS)}]


class StudentConfig(Strict):
    """A small model fine-tuned on the teacher's work (one entry of `students`)."""

    name: str = Field(
        "distilled", pattern=FOLDER_NAME, description="The student's folder: students/<name>/."
    )
    base: ModelConfig = Field(ModelConfig(), description="The model the student starts from.")
    train: TrainConfig = Field(TrainConfig(), description="How it is fine-tuned.")
    data: StudentData | None = Field(
        None,
        description="Its training rows: a preset (gold, teacher_answer, teacher_rationale) or a "
        "mapping; unset: synth/train.jsonl.",
        json_schema_extra=_data_presets_in_schema,
    )

    @field_validator("data", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in DATA_PRESETS:
                raise ValueError(f"unknown data preset {value!r}; known: {sorted(DATA_PRESETS)}")
            return DATA_PRESETS[value]
        return value


DEFAULT_VARIATIONS = [
    "similar in difficulty to the examples",
    "with different names, objects and numbers",
    "slightly harder than the examples",
    "set in a different everyday situation",
]


class GenerateConfig(Strict):
    """Synthetic inputs: the teacher writes new task inputs from seed examples."""

    per_seed: int = Field(
        1,
        ge=1,
        description="New inputs asked for per seed example; each request uses the next "
        "variation in turn.",
    )
    seeds: int | None = Field(
        None,
        ge=1,
        description="Training examples that serve as seeds (the first of the split); unset: all.",
    )
    examples_per_prompt: int = Field(
        3, ge=1, description="Training examples shown per request: the seed and those after it."
    )
    variations: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VARIATIONS),
        min_length=1,
        description="How each new input should differ, used in turn.",
    )
    template: str | None = Field(
        None,
        description="The instruction; placeholders {description} {examples} {variation} "
        "{format}; unset: the built-in one.",
    )
    max_tokens: int = Field(256, ge=1, description="The longest reply per request, in tokens.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of the requests.")
    min_chars: int = Field(8, ge=1, description="A shorter new input is dropped.")
    max_chars: int = Field(4000, ge=1, description="A longer new input is dropped.")


class SynthConfig(Strict):
    """How the teacher's replies become the students' training rows."""

    target: Literal["answer", "rationale_answer"] = Field(
        "answer",
        description="answer: the rationale helps the teacher and is dropped; "
        "rationale_answer: the student learns the reasoning too.",
    )
    require_reference_match: bool = Field(
        True,
        description="Keep only rows whose teacher answer agrees with the reference (rejection "
        "sampling).",
    )
    prompt: PromptConfig = Field(
        PromptConfig(style="zero_shot", max_tokens=32),
        description="How the students are asked, in training rows and in evaluation.",
    )
    samples: int = Field(
        1,
        ge=1,
        description="Teacher samples per input; above 1, the majority answer wins and the row "
        "keeps a rationale that agrees with it.",
    )
    generate: GenerateConfig | None = Field(
        None, description="Also have the teacher write new inputs from seed examples."
    )
    min_completion_chars: int | None = Field(
        None, ge=0, description="A shorter training completion is rejected."
    )
    max_completion_chars: int | None = Field(
        None, ge=1, description="A longer training completion is rejected."
    )
    near_duplicate_threshold: float = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description="A generated input this similar (Jaccard of word 3-grams) to an earlier "
        "input is dropped.",
    )
    contamination_ngram: int = Field(
        8, ge=1, description="Word n-gram length of the contamination check."
    )
    contamination_threshold: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="An input is contaminated when this share of its n-grams occurs in one "
        "test item.",
    )
    max_failed_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of failed calls the stage accepts; above it, exit code 3 and a "
        "re-run retries them.",
    )

    logprobs: int | None = Field(
        None,
        ge=1,
        le=20,
        description="Keep the teacher's top-K logprobs at every token of every kept reply "
        "(for train.loss: kd); 20 is the usual endpoint cap. Unset: none.",
    )


class BudgetConfig(Strict):
    """What the synth stage may spend, and how `potstill synth RUN --dry-run` estimates it."""

    # Counted over all its calls (those sent by earlier runs too, from the ledger in
    # calls.sqlite), each call in flight at its worst case.
    max_usd: float | None = Field(
        None,
        gt=0,
        description="The most the synth stage may spend on teacher calls, over all its runs "
        "(a call in flight counts at its worst case); needs the teacher's price.",
    )
    tokenizer: str | None = Field(
        None,
        description="dry run: count prompt tokens with this tokenizer (folder, packaged:NAME or "
        "hub id); unset: estimate from characters.",
    )
    # Plus 4 per message and 3 per request.
    chars_per_token: float = Field(
        4.0, gt=0, description="dry run without a tokenizer: characters per token."
    )
    expected_completion_tokens: int | None = Field(
        None,
        ge=1,
        description="dry run: completion tokens per labelling reply; unset: max_tokens (an "
        "upper bound).",
    )


class ExtraCandidateConfig(Strict):
    """A model the user wants compared beside the teacher and students (local or endpoint)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Its name in the report.")
    model: ModelConfig = Field(description="The model.")
    prompt: PromptConfig | None = Field(
        None, description="How it is asked; unset: as the students are (synth.prompt)."
    )


class TransferSetConfig(SourceConfig):
    """A named extra evaluation set for the same task, from its own source: every candidate
    is scored on it as on the test split (ground-truth metrics, no judge)."""

    name: str = Field(
        pattern=FOLDER_NAME,
        description="Its name in the report and its folder: data/transfer/<name>.jsonl, "
        "eval/transfer/<name>/.",
    )


class EvaluateConfig(Strict):
    """How the candidates are scored on the test split."""

    bootstrap_samples: int = Field(
        2000, ge=100, description="Bootstrap resamples behind each confidence interval."
    )
    seed: int = Field(0, description="Seed of the bootstrap.")
    teacher_zero_shot: bool = Field(
        True,
        description="Also ask the teacher zero-shot (no worked examples), the paper's "
        "reference point.",
    )
    candidates: list[ExtraCandidateConfig] = Field(
        default_factory=list, description="Other models to compare beside teacher and students."
    )
    # Differently written problems, another benchmark: does the student generalize beyond its
    # training source?
    transfer: list[TransferSetConfig] = Field(
        default_factory=list,
        description="Extra evaluation sets for the same task, each scored like the test split "
        "(ground-truth metrics, intervals, paired comparisons; no judge).",
    )
    # Default: roughly a small cloud CPU machine.
    local_price_per_hour: float = Field(
        0.10,
        ge=0,
        description="Dollars per hour of local compute, to put local models on the cost axis.",
    )
    overlap_ngram: int = Field(8, ge=1, description="Word n-gram length of the train/test check.")
    report_examples: int = Field(
        6, ge=0, description="Side-by-side examples in the report where candidates disagree."
    )
    # Above it, the stage exits with code 3 after writing everything; a re-run retries them.
    max_failed_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of failed calls (replies and judge calls) the stage accepts.",
    )


class Criterion(Strict):
    """One thing the judge grades."""

    name: str = Field(description="A short name, e.g. faithfulness.")
    description: str = Field(description="What the criterion asks of an answer.")


_INPUT = "The example's input, as the judge sees it."
_REFERENCE = "The reference answer, if any."
_REASON = "The judge's short reason."


class PointwiseExample(Strict):
    """A worked grading: an answer, the judge's short reason and its score."""

    input: str = Field(description=_INPUT)
    reference: str | None = Field(None, description=_REFERENCE)
    answer: str = Field(description="The answer graded.")
    reason: str = Field(description=_REASON)
    score: int = Field(ge=1, le=5, description="The score, 1 to 5.")


class PairwiseExample(Strict):
    """A worked comparison: answers A and B, the judge's short reason and its verdict."""

    input: str = Field(description=_INPUT)
    reference: str | None = Field(None, description=_REFERENCE)
    a: str = Field(description="Answer A.")
    b: str = Field(description="Answer B.")
    reason: str = Field(description=_REASON)
    verdict: Literal["A", "B", "tie"] = Field(description="A, B or tie.")


class GradingExamples(Strict):
    """Worked gradings shown to the judge before the real one."""

    pointwise: list[PointwiseExample] = Field(
        default_factory=list, description="Worked rubric scores."
    )
    pairwise: list[PairwiseExample] = Field(default_factory=list, description="Worked comparisons.")


class Rubric(Strict):
    """What the judge grades: criteria, and what the scores of its 1-5 scale mean."""

    criteria: list[Criterion] = Field(min_length=1, description="What is graded.")
    scale: dict[int, str] = Field(
        min_length=1, description="Score (1-5) -> what it means, e.g. {5: flawless}."
    )
    examples: GradingExamples = Field(GradingExamples(), description="Worked gradings.")

    @model_validator(mode="after")
    def _scale_is_one_to_five(self) -> Rubric:
        if not set(self.scale) <= {1, 2, 3, 4, 5}:
            raise ValueError(f"scale keys must be scores from 1 to 5, got {sorted(self.scale)}")
        return self


class JudgeConfig(Strict):
    """The LLM judge: pointwise rubric scores and pairwise verdicts against the teacher."""

    enabled: bool = Field(True, description="Run the judge at all.")
    model: ModelConfig = Field(ModelConfig(batch_size=16), description="The judge model.")
    sample_size: int | None = Field(
        200,
        ge=1,
        description="Judge a seeded sample of the test split (the same for every candidate); "
        "null: every example.",
    )
    seed: int = Field(0, description="Seed of the sample.")
    max_tokens: int = Field(48, ge=8, description="The longest judge reply, in tokens.")
    pointwise: bool = Field(True, description="Score each answer on the rubric (1-5).")
    pairwise: bool = Field(True, description="Compare each candidate's answer with the teacher's.")
    use_reference: bool = Field(
        True, description="Show the judge the reference answer when the example has one."
    )
    worked_examples: bool = Field(
        True,
        description="Worked gradings before the real one (small judges need them to keep the "
        "format).",
    )
    rubric: Rubric | None = Field(
        None,
        description="Replaces the built-in rubric of the task's kind (evaluate/rubrics.yaml).",
    )


class ChecksConfig(Strict):
    """Thresholds of the guard rails that say when a run's evidence means little
    (docs/checks.md gives each one's reason)."""

    min_teacher_yield: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Warn when fewer of the inputs the teacher labelled become training rows.",
    )
    max_answer_share: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Warn when one answer is at least this share of the kept training rows "
        "(tasks with discrete answers: labels, letters, numbers).",
    )
    min_student_rows: int = Field(
        50, ge=0, description="Warn when a student is trained on fewer rows."
    )
    min_optimizer_steps: int = Field(
        20, ge=0, description="Warn when a student is trained for fewer optimizer steps."
    )
    min_loss_drop: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Warn when a student's training loss falls by less than this share of "
        "its starting value (mean of the first quarter of logged steps against the last).",
    )
    max_warmup_share: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Warn when warm-up takes more than this share of a student's optimizer steps.",
    )
    max_judge_flip_rate: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="The judge is not trusted when at least this share of its pairwise "
        "verdicts change with the answers' order (a judge that picks at random flips half).",
    )
    max_judge_unreadable_rate: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="The judge is not trusted when more than this share of its pointwise or "
        "pairwise replies has no readable score or verdict.",
    )
    max_judge_position_skew: float = Field(
        0.25,
        ge=0.0,
        le=0.5,
        description="The judge is not trusted when the share of its single-order verdicts "
        "naming position A is further than this from 50% (with at least 20 such verdicts).",
    )


GradeMode = Literal["pointwise", "pairwise"]


def _all_grade_modes() -> list[GradeMode]:
    return ["pointwise", "pairwise"]


class GradeConfig(Strict):
    """The human grading round (`potstill grade RUN`): which examples, who sees what."""

    size: int = Field(
        50,
        ge=1,
        description="Test examples drawn (seeded, stratified); pinned in grades.sqlite once drawn.",
    )
    overlap: int = Field(
        20, ge=0, description="Examples every grader sees, for inter-grader agreement."
    )
    items_per_grader: int | None = Field(
        None,
        ge=1,
        description="Examples per grader: the overlap plus a share of the rest; unset: all.",
    )
    modes: list[GradeMode] = Field(
        default_factory=_all_grade_modes, min_length=1, description="pointwise and/or pairwise."
    )
    candidates: list[str] | None = Field(
        None, description="Candidates to grade (names in eval/predictions); unset: all."
    )
    reference: str = Field(
        "teacher", description="Pairwise pages put each other candidate beside this one."
    )
    seed: int = Field(0, description="Seed of the draw.")

    @model_validator(mode="after")
    def _overlap_fits(self) -> GradeConfig:
        if self.overlap > self.size:
            raise ValueError(f"overlap ({self.overlap}) exceeds size ({self.size})")
        if self.items_per_grader is not None and self.items_per_grader < self.overlap:
            raise ValueError(
                f"items_per_grader ({self.items_per_grader}) is below overlap ({self.overlap})"
            )
        return self


class RunConfig(Strict):
    """One run: a task, its data, a teacher, students, and how they are compared."""

    name: str = Field(pattern=FOLDER_NAME, description="The run's folder: runs/<name>/.")
    task: TaskConfig = Field(description="The task.")
    dataset: DatasetConfig = Field(description="The examples and their split.")
    teacher: TeacherConfig = Field(TeacherConfig(), description="The teacher.")
    students: list[StudentConfig] = Field(
        default_factory=lambda: [StudentConfig()],
        min_length=1,
        description="The students, each trained and evaluated.",
    )
    synth: SynthConfig = Field(SynthConfig(), description="Making the training rows.")
    evaluate: EvaluateConfig = Field(EvaluateConfig(), description="Scoring the candidates.")
    budget: BudgetConfig = Field(BudgetConfig(), description="Spending on teacher calls.")
    grade: GradeConfig = Field(GradeConfig(), description="Human grading.")
    judge: JudgeConfig = Field(JudgeConfig(), description="The LLM judge.")
    checks: ChecksConfig = Field(
        ChecksConfig(), description="When a run's evidence means little: warning thresholds."
    )

    @model_validator(mode="after")
    def _styles_fit_the_task(self) -> RunConfig:
        kind = self.task.kind
        for where, prompt in (
            ("teacher.prompt", self.teacher.prompt),
            ("synth.prompt", self.synth.prompt),
        ):
            if prompt.style == "chain_of_density" and kind != "summarization":
                raise ValueError(f"{where}.style: chain_of_density is for summarization only")
            if prompt.style == "cot" and kind == "conversation":
                raise ValueError(f"{where}.style: a conversation task is asked zero_shot")
        return self

    @model_validator(mode="after")
    def _unique_students(self) -> RunConfig:
        names = [s.name for s in self.students]
        if len(set(names)) != len(names):
            raise ValueError(f"student names must be unique, got {names}")
        return self

    @model_validator(mode="after")
    def _synth_needs(self) -> RunConfig:
        if self.synth.samples > 1 and self.teacher.prompt.temperature == 0:
            raise ValueError(
                "synth.samples > 1 needs teacher.prompt.temperature > 0, or every sample "
                "is the same"
            )
        teacher = self.teacher.model
        priced = None not in (teacher.price_per_million_input, teacher.price_per_million_output)
        batch = teacher.batch
        priced |= teacher.mode == "batch" and None not in (
            batch.price_per_million_input,
            batch.price_per_million_output,
        )
        if self.budget.max_usd is not None and not priced:
            raise ValueError(
                "budget.max_usd needs the teacher's price: set teacher.model."
                "price_per_million_input and teacher.model.price_per_million_output"
            )
        return self

    @model_validator(mode="after")
    def _batch_mode_is_for_the_teacher(self) -> RunConfig:
        models = [("judge.model", self.judge.model)]
        models += [(f"students.{i}.base", s.base) for i, s in enumerate(self.students)]
        models += [
            (f"evaluate.candidates.{i}.model", c.model)
            for i, c in enumerate(self.evaluate.candidates)
        ]
        for where, model in models:
            if model.mode == "batch":
                raise ValueError(
                    f"{where}.mode: batch is for teacher.model only (the synth stage's calls)"
                )
        return self

    @model_validator(mode="after")
    def _kd_needs_logprobs(self) -> RunConfig:
        for index, student in enumerate(self.students):
            if student.train.loss == "sft":
                continue
            where = f"students.{index}.train.loss"
            if self.synth.logprobs is None:
                raise ValueError(
                    f"{where}: {student.train.loss} learns from the teacher's token "
                    "distributions: set synth.logprobs (e.g. 20)"
                )
            if student.data is not None and student.data.source == "gold":
                raise ValueError(f"{where}: gold rows have no teacher distributions; use sft")
            if student.train.loss == "on_policy" and self.teacher.model.backend != "local":
                raise ValueError(
                    f"{where}: on_policy scores the student's own samples with the teacher's "
                    "logits, so it needs a local teacher (teacher.model.backend: local)"
                )
        return self

    @model_validator(mode="after")
    def _extra_candidate_names(self) -> RunConfig:
        taken = {s.name for s in self.students}
        for extra in self.evaluate.candidates:
            if extra.name in taken or extra.name.startswith(("teacher", "base_student")):
                raise ValueError(
                    f"evaluate.candidates: the name {extra.name!r} is taken (names must differ "
                    "from the students and not start with teacher or base_student)"
                )
            taken.add(extra.name)
        return self

    @model_validator(mode="after")
    def _transfer_sets(self) -> RunConfig:
        names = [t.name for t in self.evaluate.transfer]
        if len(set(names)) != len(names):
            raise ValueError(f"evaluate.transfer: set names must be unique, got {names}")
        for index, source in enumerate(self.evaluate.transfer):
            if source.main_hub and self.dataset.hub_name is None:
                raise ValueError(
                    f"evaluate.transfer.{index}: names only a hub split or config, but the main "
                    "source is not a hub dataset; give `path` or `hub`"
                )
        return self

    def section_hash(self, *sections: str) -> str:
        """A stable hash of some top-level sections, for deciding whether a stage is stale."""
        dumped = self.model_dump(mode="json")
        payload = {s: dumped[s] for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _yaml(text: str) -> Any:
    """Parse YAML; every way it can fail (syntax, a date like 2024-13-01, deep nesting) is a
    ValueError with PyYAML's own explanation."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ValueError(where + " ".join(filter(None, (exc.context, exc.problem)))) from None
    except yaml.YAMLError as exc:
        raise ValueError(" ".join(str(exc).split())) from None
    except (ValueError, RecursionError) as exc:  # PyYAML's constructors raise these
        raise ValueError(str(exc) or type(exc).__name__) from None


def _set_override(tree: dict[str, Any], dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    if not all(k.strip() for k in keys):
        raise ValueError("an empty key; use dotted names like teacher.model.base_url")
    node: Any = tree
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[int(key)]
            continue
        if key not in node or node[key] is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict | list):
            raise ValueError(f"{'.'.join(keys[: i + 1])} is not a section")
    value = _yaml(raw) if raw != "" else ""
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config models a field's annotation can hold (through lists, dicts, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section at `loc` (e.g. ("dataset",) -> DatasetConfig's fields)."""
    models: list[type[BaseModel]] = [RunConfig]
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the same models
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        models = [m for f in fields for m in _models_in(f.annotation)]
    return sorted({name for m in models for name in m.model_fields})


def _unknown_key(loc: tuple[Any, ...]) -> str:
    near = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1, cutoff=0.6)
    return f"unknown key; did you mean `{near[0]}`?" if near else "unknown key"


def _format_errors(source: str, err: ValidationError, overrides: dict[str, str]) -> str:
    lines = [f"{source}: invalid config"]
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = _unknown_key(item["loc"]) if item["type"] == "extra_forbidden" else item["msg"]
        if item.get("ctx", {}).get("pattern") == FOLDER_NAME:
            shown = str(item["input"])[:40]
            msg = f"{shown!r} is not a folder name (letters, digits, _ . -; not only dots)"
        given = next(
            (o for key, o in overrides.items() if loc == key or loc.startswith(key + ".")), None
        )
        if given is not None:  # the value came from the command line, not the file
            msg += f" (from the command-line override {given!r})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


# `potstill init` writes this where it could not guess a value; a config that still holds one
# is refused, naming the key.
PLACEHOLDER = "<FILL IN"


def placeholder_keys(tree: Any, where: str = "", _path: frozenset[int] = frozenset()) -> list[str]:
    """The dotted keys whose value (or a list item of which) is still an init placeholder."""
    if isinstance(tree, str):
        return [where] if tree.startswith(PLACEHOLDER) else []
    # A YAML alias can make a tree contain itself (`name: &x [*x]`): validation refuses it.
    if not isinstance(tree, dict | list) or id(tree) in _path:
        return []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    found: list[str] = []
    for key, value in items:
        inner = f"{where}.{key}" if where else str(key)
        found += placeholder_keys(value, inner, _path | {id(tree)})
    return sorted(set(found))


def apply_overrides(tree: dict[str, Any], overrides: list[str] | None) -> dict[str, str]:
    """Set each dotted `key=value` in the tree; returns key -> the override as given."""
    given: dict[str, str] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            _set_override(tree, key.strip(), raw)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ConfigError(f"override {item!r}: {exc}") from None
        given[key.strip()] = item
    return given


def parse_config(tree: Any, source: str, overrides: list[str] | None = None) -> RunConfig:
    """Validate a config tree; `source` names the file in every error message."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    given = apply_overrides(tree, overrides)
    unfilled = [
        f"  {key}: still the placeholder `potstill init` wrote; replace it"
        for key in placeholder_keys(tree)
    ]
    try:
        config = RunConfig.model_validate(tree)
    except ValidationError as err:
        lines = _format_errors(source, err, given).split("\n")
        raise ConfigError("\n".join([lines[0], *unfilled, *lines[1:]])) from None
    if unfilled:
        raise ConfigError("\n".join([f"{source}: invalid config", *unfilled]))
    return config


def read_config_tree(path: str | Path) -> Any:
    """The YAML of a config file, parsed; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from None
    try:
        return _yaml(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML run config; errors name the file and the offending key."""
    return parse_config(read_config_tree(path), str(path), overrides)


def builtin_config_path(name: str) -> Path:
    """The path of a config shipped inside the package (e.g. the demo)."""
    return Path(__file__).parent / "configs" / f"{name}.yaml"
