"""Run configuration: one YAML file, validated by pydantic, with `key=value` overrides."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


class Strict(BaseModel):
    # inf and nan are never meant: `epochs: .inf` would train forever.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# A name becomes a folder (runs/<name>, students/<name>): letters, digits, `_`, `.`, `-`, and
# not only dots, since `.` and `..` would put the files in another folder.
FOLDER_NAME = r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$"


class ModelConfig(Strict):
    """Where a chat model lives and how to talk to it."""

    backend: Literal["local", "openai"] = "local"
    # local: "packaged:smollm2-135m-instruct", a folder, or a hub id. openai: the model name.
    model: str = "packaged:smollm2-135m-instruct"
    base_url: str | None = None
    # The *name* of the environment variable holding the key; the key itself never enters YAML.
    api_key_env: str | None = None
    max_concurrency: int = Field(8, ge=1)
    batch_size: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    # openai backend manners: optional rate limits (tokens count the prompt estimate plus
    # max_tokens, as providers do), the longest single back-off, and the total time one call
    # may spend retrying before it is recorded as failed.
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    retry_max_wait_s: float = Field(60.0, gt=0)
    retry_total_s: float = Field(600.0, gt=0)
    # What an endpoint charges, in dollars per million tokens: the synth stage's cost, its
    # budget and dry-run estimate, and the report's cost per 1,000 requests use them. Local
    # models are priced by measured compute time instead (`evaluate.local_price_per_hour`).
    price_per_million_input: float | None = Field(None, ge=0)
    price_per_million_output: float | None = Field(None, ge=0)


class Shot(Strict):
    """A worked example shown to a model before the real input (few-shot)."""

    inputs: dict[str, str]
    answer: str
    reason: str | None = None


class PromptConfig(Strict):
    """How a model is asked: the prompt style, worked examples and sampling."""

    # cot: JSON {"reason", "answer"}; chain_of_density: summaries only (a JSON list of rounds).
    style: Literal["zero_shot", "cot", "chain_of_density"] = "zero_shot"
    shots: list[Shot] = Field(default_factory=list)
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0.0)


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


class TemplateConfig(Strict):
    """Jinja2 templates for the system message and the user turn; unset means the default."""

    system: str | None = None
    user: str | None = None

    _valid = field_validator("system", "user")(_check_template)


class TemplatesConfig(Strict):
    """Prompt overrides: `system` / `user` for every style, or per style (`cot: {system: ...}`)."""

    system: str | None = None
    user: str | None = None
    zero_shot: TemplateConfig | None = None
    cot: TemplateConfig | None = None
    chain_of_density: TemplateConfig | None = None

    _valid = field_validator("system", "user")(_check_template)


class TaskConfig(Strict):
    kind: TaskKind
    description: str | None = None
    # classification: a ready-made task. nli: inputs premise + hypothesis, labels
    # entailment / neutral / contradiction, with common synonyms.
    preset: Literal["nli"] | None = None
    # The task's input field names, for classification, math and summarization (the defaults
    # are text / question / document); `dataset.fields` maps them to the dataset's columns.
    inputs: list[str] | None = Field(None, min_length=1)
    # classification: the label set, matched case- and whitespace-insensitively.
    labels: list[str] | None = None
    # classification: other words a reply may use for a label, e.g. {positive: [good, pos]}.
    synonyms: dict[str, list[str]] = Field(default_factory=dict)
    # math: evaluate an arithmetic expression given as the answer ("22 - 9" -> 13) with a
    # safe calculator. Applies to every candidate alike; the report says so.
    calculator: bool = False
    # math: an answer counts as right when |answer - reference| <= tolerance * max(1, |ref|).
    tolerance: float = Field(1e-6, ge=0.0)
    # summarization: the summary length asked for, and the rounds of chain of density.
    summary_words: int = Field(60, ge=5)
    density_rounds: int = Field(3, ge=1, le=8)
    templates: TemplatesConfig = TemplatesConfig()

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
    name: Literal["arithmetic_stories"] = "arithmetic_stories"
    size: int = Field(600, ge=2)
    seed: int = 0


class DatasetConfig(Strict):
    """Where examples come from (exactly one source) and how they split."""

    # A .jsonl / .csv / .parquet file, or `hf:org/name` for a Hugging Face hub dataset.
    path: str | None = None
    # A hub dataset name (or a local folder of data files) loaded with `datasets.load_dataset`.
    hub: str | None = None
    hub_config: str | None = None
    hub_split: str = "train"
    generator: GeneratorConfig | None = None
    # task field -> the user's column name; unmapped fields use the task's own names. A list
    # gathers several columns into one field (multiple-choice options in columns A, B, C...).
    fields: dict[str, str | list[str]] = Field(default_factory=dict)
    test_size: int = Field(200, ge=1)
    # An optional development split, held out of training like the test split.
    dev_size: int = Field(0, ge=0)
    train_size: int | None = Field(None, ge=1)
    seed: int = 0
    # The longest input field or reference accepted, in characters: far more than any model's
    # context, so a longer cell is a mistake (a whole file in one cell), not an input.
    max_chars: int = Field(1_000_000, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        sources = [s for s in (self.path, self.hub, self.generator) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of `path`, `hub` or `generator`")
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
    model: ModelConfig = ModelConfig()
    prompt: PromptConfig = PromptConfig(style="cot", max_tokens=128)
    # A short note on the teacher's procedure, shown in the report (e.g. "8-shot CoT").
    procedure: str | None = None


class TrainConfig(Strict):
    method: Literal["lora", "full"] = "lora"
    epochs: float = Field(2.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(512, ge=16)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0
    save_steps: int = Field(50, ge=1)
    # How rows become batches (docs/training.md). auto: padding-free batches where the
    # attention kernel takes packed sequences without a dense mask (flash / flex / varlen),
    # else length-grouped batches padded to the longest row. padded: random batches, as TRL's
    # default, kept for comparison.
    batching: Literal["auto", "length_grouped", "padding_free", "padded"] = "auto"
    # A transformers attention implementation ("sdpa", "eager", "flex_attention",
    # "flash_attention_2", "potstill_varlen" for PyTorch's flash varlen kernel on a GPU);
    # None: transformers' default.
    attn_implementation: str | None = None
    # Rows held out of training to measure the eval loss on (at least one when above 0).
    dev_fraction: float = Field(0.05, ge=0.0, lt=0.5)
    # Steps between eval-loss measurements; None: at every checkpoint and at the end.
    eval_steps: int | None = Field(None, ge=1)
    # auto: continue from the last complete checkpoint made with the same settings and data;
    # never: start over.
    resume: Literal["auto", "never"] = "auto"


class StudentData(Strict):
    """Which rows a student learns from; unset fields follow the run's `synth` section."""

    # teacher: the teacher's accepted replies (synth/teacher.jsonl); gold: the dataset's own
    # references (data/train.jsonl), which carry no rationale.
    source: Literal["teacher", "gold"] = "teacher"
    target: Literal["answer", "rationale_answer"] | None = None
    require_reference_match: bool | None = None

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


class StudentConfig(Strict):
    name: str = Field("distilled", pattern=FOLDER_NAME)
    base: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    # None: synth/train.jsonl, the training set `synth` asks for. A preset name
    # (gold, teacher_answer, teacher_rationale) or a mapping of StudentData fields.
    data: StudentData | None = None

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

    # New inputs asked for per seed example; each request uses the next variation in turn.
    per_seed: int = Field(1, ge=1)
    # How many training examples serve as seeds (the first ones of the split); all when unset.
    seeds: int | None = Field(None, ge=1)
    # Training examples shown in each request: the seed and the ones after it.
    examples_per_prompt: int = Field(3, ge=1)
    variations: list[str] = Field(default_factory=lambda: list(DEFAULT_VARIATIONS), min_length=1)
    # The instruction; placeholders: {description} {examples} {variation} {format}.
    template: str | None = None
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    min_chars: int = Field(8, ge=1)
    max_chars: int = Field(4000, ge=1)


class SynthConfig(Strict):
    # answer: the rationale helps the teacher and is dropped; rationale_answer: the student
    # learns the reasoning too.
    target: Literal["answer", "rationale_answer"] = "answer"
    # Keep only rows whose teacher answer agrees with the reference (rejection sampling).
    require_reference_match: bool = True
    # How the student is asked, in its training rows and in evaluation (base and trained alike).
    prompt: PromptConfig = PromptConfig(style="zero_shot", max_tokens=32)
    # Teacher samples per input (sampled at teacher.prompt.temperature); with more than one,
    # the answer is the majority vote and the row keeps a rationale that agrees with it.
    samples: int = Field(1, ge=1)
    generate: GenerateConfig | None = None
    # Bounds on the training completion (what the student learns), in characters.
    min_completion_chars: int | None = Field(None, ge=0)
    max_completion_chars: int | None = Field(None, ge=1)
    # Generated inputs this similar (Jaccard of word 3-grams) to an earlier input are dropped.
    near_duplicate_threshold: float = Field(0.85, gt=0.0, le=1.0)
    # An input is contaminated when this share of its word n-grams occurs in one test item.
    contamination_ngram: int = Field(8, ge=1)
    contamination_threshold: float = Field(0.8, gt=0.0, le=1.0)
    # The stage counts as done while failed calls stay at or under this share of all calls;
    # above it, the stage exits with code 3 and a re-run retries them.
    max_failed_fraction: float = Field(0.0, ge=0.0, le=1.0)


class BudgetConfig(Strict):
    # The most the synth stage may spend on teacher calls, counted over all its calls
    # (those answered in earlier runs too). Needs the teacher's price
    # (teacher.model.price_per_million_input/output).
    max_usd: float | None = Field(None, gt=0)
    # For `potstill synth RUN --dry-run`: prompt tokens are counted with `tokenizer` (a local
    # folder, packaged:NAME or hub id whose chat template matches the teacher's) when given,
    # else estimated as characters / chars_per_token plus 4 per message and 3 per request.
    tokenizer: str | None = None
    chars_per_token: float = Field(4.0, gt=0)
    # Completion tokens expected per labelling reply; max_tokens (an upper bound) when unset.
    expected_completion_tokens: int | None = Field(None, ge=1)


class ExtraCandidateConfig(Strict):
    """A model the user wants compared beside the teacher and students (local or endpoint)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model: ModelConfig
    # How it is asked; by default the way the students are asked (`synth.prompt`).
    prompt: PromptConfig | None = None


class EvaluateConfig(Strict):
    bootstrap_samples: int = Field(2000, ge=100)
    seed: int = 0
    # Also ask the teacher zero-shot (the task's plain prompt, no worked examples), the
    # paper's reference point, beside its configured prompt.
    teacher_zero_shot: bool = True
    candidates: list[ExtraCandidateConfig] = Field(default_factory=list)
    # Dollars per hour of local compute, to put local candidates on the cost axis beside
    # endpoints (default: roughly a small cloud CPU machine).
    local_price_per_hour: float = Field(0.10, ge=0)
    # Word n-gram length for the train/test overlap check.
    overlap_ngram: int = Field(8, ge=1)
    # Side-by-side examples in the report where candidates disagree.
    report_examples: int = Field(6, ge=0)
    # The stage counts as done while failed calls (candidates' replies and judge calls) stay
    # at or under this share of all its calls; above it, it exits with code 3 after writing
    # everything, and a re-run retries them.
    max_failed_fraction: float = Field(0.0, ge=0.0, le=1.0)


class Criterion(Strict):
    name: str
    description: str


class PointwiseExample(Strict):
    """A worked grading: an answer, the judge's short reason and its score."""

    input: str
    reference: str | None = None
    answer: str
    reason: str
    score: int = Field(ge=1, le=5)


class PairwiseExample(Strict):
    """A worked comparison: answers A and B, the judge's short reason and its verdict."""

    input: str
    reference: str | None = None
    a: str
    b: str
    reason: str
    verdict: Literal["A", "B", "tie"]


class GradingExamples(Strict):
    pointwise: list[PointwiseExample] = Field(default_factory=list)
    pairwise: list[PairwiseExample] = Field(default_factory=list)


class Rubric(Strict):
    """What the judge grades: criteria, and what the scores of its 1-5 scale mean."""

    criteria: list[Criterion] = Field(min_length=1)
    scale: dict[int, str] = Field(min_length=1)
    examples: GradingExamples = GradingExamples()

    @model_validator(mode="after")
    def _scale_is_one_to_five(self) -> Rubric:
        if not set(self.scale) <= {1, 2, 3, 4, 5}:
            raise ValueError(f"scale keys must be scores from 1 to 5, got {sorted(self.scale)}")
        return self


class JudgeConfig(Strict):
    """The LLM judge: pointwise rubric scores and pairwise verdicts against the teacher."""

    enabled: bool = True
    model: ModelConfig = ModelConfig(batch_size=16)
    # Judge a seeded sample of the test split (the same examples for every candidate), to
    # bound the cost; null judges every example.
    sample_size: int | None = Field(200, ge=1)
    seed: int = 0
    max_tokens: int = Field(48, ge=8)
    pointwise: bool = True
    pairwise: bool = True
    # Show the judge the reference answer when the example has one.
    use_reference: bool = True
    # Worked grading examples before the real one: small judges need them to keep the format.
    worked_examples: bool = True
    # Replaces the built-in rubric of the task's kind (evaluate/rubrics.yaml).
    rubric: Rubric | None = None


GradeMode = Literal["pointwise", "pairwise"]


def _all_grade_modes() -> list[GradeMode]:
    return ["pointwise", "pairwise"]


class GradeConfig(Strict):
    """The human grading round (`potstill grade RUN`): which examples, who sees what."""

    # Examples drawn from the test split (seeded, stratified); pinned in grades.sqlite once drawn.
    size: int = Field(50, ge=1)
    # Examples every grader sees, so inter-grader agreement can be computed.
    overlap: int = Field(20, ge=0)
    # Examples per grader: the overlap plus a share of the rest, least-graded first.
    # None: every grader sees every sampled example.
    items_per_grader: int | None = Field(None, ge=1)
    modes: list[GradeMode] = Field(default_factory=_all_grade_modes, min_length=1)
    # Candidates to grade (names in eval/predictions); None: every candidate there.
    candidates: list[str] | None = None
    # Pairwise pages put each other candidate beside this one.
    reference: str = "teacher"
    seed: int = 0

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
    name: str = Field(pattern=FOLDER_NAME)
    task: TaskConfig
    dataset: DatasetConfig
    teacher: TeacherConfig = TeacherConfig()
    students: list[StudentConfig] = Field(default_factory=lambda: [StudentConfig()], min_length=1)
    synth: SynthConfig = SynthConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    budget: BudgetConfig = BudgetConfig()
    grade: GradeConfig = GradeConfig()
    judge: JudgeConfig = JudgeConfig()

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
        if self.budget.max_usd is not None and not priced:
            raise ValueError(
                "budget.max_usd needs the teacher's price: set teacher.model."
                "price_per_million_input and teacher.model.price_per_million_output"
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


def parse_config(tree: Any, source: str, overrides: list[str] | None = None) -> RunConfig:
    """Validate a config tree; `source` names the file in every error message."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
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
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err, given)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML run config; errors name the file and the offending key."""
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
        tree = _yaml(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(tree, str(path), overrides)


def builtin_config_path(name: str) -> Path:
    """The path of a config shipped inside the package (e.g. the demo)."""
    return Path(__file__).parent / "configs" / f"{name}.yaml"
