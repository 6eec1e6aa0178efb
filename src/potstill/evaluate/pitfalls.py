"""Pitfall checks: the ways an evaluation misleads, each turned into numbers and a warning.

Parse failures, format drift, train/test overlap, metrics that rank candidates differently,
differences too small for the examples behind them, and the judge's own biases.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from potstill.config import ChecksConfig, RunConfig
from potstill.data.loading import read_examples
from potstill.evaluate.judgments import JUDGE_METRICS
from potstill.figures import percent
from potstill.guards import Finding, run_guards
from potstill.guards import warn as _warn
from potstill.records import TrainingRow, read_records
from potstill.runs import RunFolder
from potstill.synth.overlap import input_text, split_overlap
from potstill.tasks import Example, Task


def parse_failures(name: str, cand: dict[str, Any]) -> list[Finding]:
    failed = cand["no_answer_rate"] + cand["malformed_rate"] + cand["call_failed_rate"]
    if failed < 0.05:
        return []
    return [
        _warn(
            "parse_failure",
            name,
            f"{name}: {percent(failed)} of replies gave no usable answer (no_answer "
            f"{percent(cand['no_answer_rate'])}, malformed {percent(cand['malformed_rate'])}, "
            f"failed calls {percent(cand['call_failed_rate'])}); they count as wrong.",
        )
    ]


def reply_shape(text: str | None) -> str:
    """A coarse shape of a reply: JSON or text, on one line or several."""
    body = (text or "").strip()
    if not body:
        return "empty"
    kind = "JSON" if body.startswith(("{", "```")) else "text"
    lines = "several lines" if "\n" in body else "one line"
    return f"{kind} on {lines}"


def format_check(
    rows: list[dict[str, Any]], targets: list[str] | None, max_tokens: int
) -> dict[str, Any]:
    """Off-format replies (an answer is there, not in the asked form), replies cut off at
    max_tokens, and, for a trained student, how its replies differ from its training targets."""
    n = len(rows) or 1
    found: dict[str, Any] = {
        "off_format_rate": sum(
            r["status"] != "ok" and r.get("flexible_answer") is not None for r in rows
        )
        / n,
        "cut_off_rate": sum(r["finish_reason"] == "length" for r in rows) / n,
        "max_tokens": max_tokens,
    }
    if targets:
        usual = Counter(reply_shape(t) for t in targets).most_common(1)[0][0]
        replies = [r["reply"] for r in rows if r["reply"] is not None]
        found["target_shape"] = usual
        found["shape_mismatch_rate"] = sum(reply_shape(r) != usual for r in replies) / n
        found["reply_chars"] = sum(len(r) for r in replies) / max(1, len(replies))
        found["target_chars"] = sum(len(t) for t in targets) / len(targets)
    return found


def format_warnings(name: str, check: dict[str, Any]) -> list[Finding]:
    parts = []
    if check["off_format_rate"] >= 0.05:
        parts.append(
            f"{percent(check['off_format_rate'])} of replies hold an answer outside the asked "
            "format"
        )
    if check["cut_off_rate"] >= 0.05:
        parts.append(
            f"{percent(check['cut_off_rate'])} were cut off at max_tokens ({check['max_tokens']})"
        )
    if check.get("shape_mismatch_rate", 0.0) >= 0.10:
        parts.append(
            f"{percent(check['shape_mismatch_rate'])} are not shaped like its training targets "
            f"({check['target_shape']})"
        )
    ratio = check.get("reply_chars", 0.0) / max(1.0, check.get("target_chars", 0.0))
    if "target_chars" in check and ratio >= 2.0:
        parts.append(
            f"replies average {check['reply_chars']:.0f} characters against "
            f"{check['target_chars']:.0f} in its training targets ({ratio:.1f}x)"
        )
    if not parts:
        return []
    what = f"{name}: format drift: " if "target_shape" in check else f"{name}: "
    return [_warn("format", name, what + "; ".join(parts) + ".")]


def overlap_check(task: Task, train: list[Example], test: list[Example], n: int) -> dict[str, Any]:
    """How much of each test input's word n-grams also occur in the training inputs
    (`overlap.split_overlap`, on the same input text as synth's screens)."""
    return split_overlap(
        [input_text(task.input_fields, e.inputs) for e in test],
        [input_text(task.input_fields, e.inputs) for e in train],
        n,
    )


def overlap_warnings(check: dict[str, Any], transfer_set: str | None = None) -> list[Finding]:
    """A warning when the test split (or the named transfer set) repeats training inputs."""
    if not check["exact_duplicates"] and check["half_overlapping_rate"] < 0.10:
        return []
    title, inputs, subject = "train/test overlap", "test inputs", "data"
    if transfer_set is not None:
        title = f"train/transfer overlap ({transfer_set})"
        inputs, subject = f"inputs of transfer set {transfer_set!r}", transfer_set
    return [
        _warn(
            "train_test_overlap",
            subject,
            f"{title}: {check['exact_duplicates']} of {check['test_examples']} {inputs} also "
            f"appear in the training split; {percent(check['half_overlapping_rate'])} "
            f"share at least half of their word {check['ngram']}-grams with it (mean overlap "
            f"{percent(check['mean_overlap'])}). Scores may reward memory of near-copies.",
        )
    ]


def _fmt(entry: dict[str, Any]) -> str:
    value = entry["value"]
    return percent(value) if entry.get("percent") else f"{value:.3g}"


def ranking_disagreements(candidates: dict[str, Any]) -> list[Finding]:
    """Pairs of candidates that two metrics put in opposite order."""
    names = list(candidates)
    metric_names = list(dict.fromkeys(m for c in candidates.values() for m in c.get("metrics", {})))
    found = []
    for m1, m2 in itertools.combinations(metric_names, 2):
        clashes = []
        for x, y in itertools.combinations(names, 2):
            e = [candidates[c].get("metrics", {}).get(m) for c in (x, y) for m in (m1, m2)]
            if any(v is None or v["value"] is None for v in e):
                continue
            x1, x2, y1, y2 = e
            d1 = (x1["value"] - y1["value"]) * (1 if x1["higher_is_better"] else -1)
            d2 = (x2["value"] - y2["value"]) * (1 if x2["higher_is_better"] else -1)
            if d1 * d2 < 0:
                up, down = (x, y) if d1 > 0 else (y, x)
                first, second = candidates[up]["metrics"], candidates[down]["metrics"]
                clashes.append(
                    f"{m1} puts {up} above {down} ({_fmt(first[m1])} vs {_fmt(second[m1])}), "
                    f"{m2} the other way ({_fmt(first[m2])} vs {_fmt(second[m2])})"
                )
        if clashes:
            found.append(
                _warn(
                    "metric_disagreement",
                    f"{m1}/{m2}",
                    f"{m1} and {m2} disagree: "
                    + "; ".join(clashes[:3])
                    + (f"; and {len(clashes) - 3} more pairs" if len(clashes) > 3 else "")
                    + ". One metric alone would mislead here.",
                )
            )
    return found


def too_few_examples(comparisons: list[dict[str, Any]]) -> list[Finding]:
    """Paired differences whose 95% interval includes zero, with the n it would take."""
    found = []
    for comp in comparisons:
        parts = []
        for metric, entry in comp.get("metrics", {}).items():
            low, high, diff, n = entry["ci_low"], entry["ci_high"], entry["difference"], entry["n"]
            if n == 0 or not low <= 0 <= high or low == high:
                continue  # resolved, or a single-point interval (a bootstrap of equal scores)
            part = f"{metric} {diff:+.3g} [{low:+.3g}, {high:+.3g}] on {n} examples"
            need = n * ((high - low) / 2 / diff) ** 2 if diff else 0.0
            if int(need) > n:
                part += f" (about {int(need):,} would resolve a difference this size)"
            parts.append(part)
        if parts:
            found.append(
                _warn(
                    "too_few_examples",
                    f"{comp['a']} vs {comp['b']}",
                    f"{comp['a']} vs {comp['b']}: the 95% interval of the paired difference "
                    "includes zero for " + "; ".join(parts) + ". These examples cannot tell "
                    "the two apart on those metrics.",
                )
            )
    return found


# Per kind of judge reply: (how many were asked, how many were read), in a candidate's judge entry.
_READ = {"pointwise": ("judged", "scored"), "pairwise": ("pairs", "decided")}


def _unreadable(candidates: dict[str, Any], kind: str) -> tuple[int, int]:
    """(unreadable, asked) over every candidate's pointwise or pairwise judge replies."""
    asked_key, read_key = _READ[kind]
    entries = [c["judge"][kind] for c in candidates.values() if c.get("judge", {}).get(kind)]
    asked = sum(e[asked_key] for e in entries)
    return asked - sum(e[read_key] for e in entries), asked


def judge_trust(
    judge: dict[str, Any], candidates: dict[str, Any], checks: ChecksConfig
) -> dict[str, Any]:
    """Whether the judge's scores are evidence: not when its position-flip rate, its share of
    unreadable replies or its position skew is past the thresholds of `checks:`. Returns
    {"trusted": bool, "reasons": [one sentence with the numbers per failed check]}."""
    bias, reasons = judge["bias"], []
    flip = bias.get("flip_rate")
    if flip is not None and bias.get("pairs") and flip >= checks.max_judge_flip_rate:
        reasons.append(
            f"{percent(flip)} of its {bias['pairs']} pairwise verdicts changed when the two "
            f"answers swapped places (at or above {percent(checks.max_judge_flip_rate)}, "
            "checks.max_judge_flip_rate; a judge that names A or B at random flips half)"
        )
    for kind, what in (("pointwise", "score"), ("pairwise", "verdict")):
        unread, asked = _unreadable(candidates, kind)
        if asked and unread / asked > checks.max_judge_unreadable_rate:
            reasons.append(
                f"{unread} of its {asked} {kind} replies ({percent(unread / asked)}) had no "
                f"readable {what} (above {percent(checks.max_judge_unreadable_rate)}, "
                "checks.max_judge_unreadable_rate)"
            )
    first, n = bias.get("first_position_rate"), bias.get("first_position_n", 0)
    if first is not None and n >= 20 and abs(first - 0.5) > checks.max_judge_position_skew:
        reasons.append(
            f"it named position A in {percent(first)} of {n} single-order verdicts that picked a "
            f"winner (more than {percent(checks.max_judge_position_skew)} from 50%, "
            "checks.max_judge_position_skew)"
        )
    return {"trusted": not reasons, "reasons": reasons}


def set_judge_aside(results: dict[str, Any]) -> None:
    """An untrusted judge's scores leave every candidate's `metrics` (kept under its
    `judge.metrics`, for the judge section alone) and the paired comparisons, so no table,
    comparison or metric-disagreement warning rests on them."""
    for cand in results["candidates"].values():
        metrics = cand.get("metrics", {})
        aside = {m: metrics.pop(m) for m in JUDGE_METRICS if m in metrics}
        if "judge" in cand:
            cand["judge"]["metrics"] = aside
    for comp in results["comparisons"]:
        for metric in JUDGE_METRICS:
            comp.get("metrics", {}).pop(metric, None)


def judge_warnings(judge: dict[str, Any], candidates: dict[str, Any]) -> list[Finding]:
    """The judge checked: whether it is trusted, its sample, failures, position and length
    biases, self-preference."""
    bias, found = judge["bias"], []
    if judge.get("trusted") is False:
        found.append(
            _warn(
                "judge_untrusted",
                "judge",
                "the judge failed its own checks, so its scores are not evidence: "
                + "; ".join(judge["reasons"])
                + ". They are left out of the comparison table, the paired comparisons and "
                "the metric-disagreement warnings; a larger judge model (judge.model) may pass.",
            )
        )
    if judge["sample_size"] < judge["test_size"]:
        found.append(
            _warn(
                "judge_sample",
                "judge",
                (
                    f"the judge's scores rest on a seeded sample of {judge['sample_size']} of "
                    f"{judge['test_size']} test examples (judge.sample_size), the same for every "
                    "candidate; their intervals are wider than the ground-truth ones."
                ),
            )
        )
    if judge["same_as_teacher"]:
        found.append(
            _warn(
                "judge_self_preference",
                "judge",
                (
                    f"the judge ({judge['model']}) is the teacher's own model; it may "
                    "prefer answers like its own (self-preference). Use a different judge model."
                ),
            )
        )
    for name, cand in candidates.items():
        info = cand.get("judge", {})
        point = info.get("pointwise", {}).get("malformed_rate")
        pair = info.get("pairwise", {}).get("malformed_rate")
        bad = [
            f"{percent(v)} of {kind} replies"
            for kind, v in (("pointwise", point), ("pairwise", pair))
            if v is not None and v >= 0.2
        ]
        if bad:
            found.append(
                _warn(
                    "judge_parse_failure",
                    name,
                    (
                        f"on {name}, " + " and ".join(bad) + " had no readable score or verdict "
                        "on their last line; those examples are left out of the judge's figures."
                    ),
                )
            )
    flip = bias.get("flip_rate")
    if flip is not None and bias["pairs"] and flip >= 0.2:
        found.append(
            _warn(
                "judge_position_flip",
                "judge",
                (
                    f"{percent(flip)} of {bias['pairs']} pairwise verdicts changed when the "
                    "two answers swapped places (counted as ties); such verdicts follow position, "
                    "not quality."
                ),
            )
        )
    first = bias.get("first_position_rate")
    if first is not None and bias["first_position_n"] >= 20 and abs(first - 0.5) >= 0.15:
        found.append(
            _warn(
                "judge_position_bias",
                "judge",
                (
                    f"the judge named position A in {percent(first)} of "
                    f"{bias['first_position_n']} single-order verdicts that picked a winner "
                    "(50% expected without position bias)."
                ),
            )
        )
    for key, n_key, what in (
        ("score_length_spearman", "score_length_n", "pointwise scores"),
        ("verdict_length_spearman", "verdict_length_n", "pairwise verdicts"),
    ):
        rho = bias.get(key)
        if rho is not None and bias[n_key] >= 10 and abs(rho) >= 0.3:
            found.append(
                _warn(
                    "judge_length_bias",
                    "judge",
                    (
                        f"the judge's {what} correlate with answer length (Spearman "
                        f"{rho:+.2f}, n = {bias[n_key]}); check that longer answers are really "
                        "better."
                    ),
                )
            )
    return found


def reference_check(test: list[Example]) -> dict[str, Any]:
    """How many evaluation examples have a reference to score against."""
    missing = sum(e.reference is None for e in test)
    return {"examples": len(test), "without_reference": missing}


def reference_warnings(
    task: Task, check: dict[str, Any], transfer_set: str | None = None
) -> list[Finding]:
    """Examples without a reference are never silently left out of the ground-truth metrics
    (of the test split, or of the named transfer set)."""
    n, missing = check["examples"], check["without_reference"]
    if not missing:
        return []
    examples, subject, mapping = "test examples", "test", "dataset.fields.answer"
    if transfer_set is not None:
        examples, subject = f"examples of transfer set {transfer_set!r}", transfer_set
        mapping = "its `fields: {answer: ...}` in evaluate.transfer"
    if missing == n:
        message = (
            f"none of the {n} {examples} has a reference, so no ground-truth metric "
            f"(accuracy, ROUGE, ...) can be computed; map the answer column with {mapping}"
        )
        return [_warn("references", subject, message)] if task.reference_match else []
    message = (
        f"{missing} of {n} {examples} have no reference: ground-truth metrics cover only "
        f"the {n - missing} that do"
        + (
            f" (reference-free metrics and the judge cover all {n})"
            if transfer_set is None
            else f" (reference-free metrics cover all {n})"
        )
    )
    return [_warn("references", subject, message)]


def _targets(run: RunFolder) -> list[str]:
    path = run.synth_dir / "train.jsonl"  # the default training set every student learns from
    if not path.exists():
        return []
    return [r.completion[-1].content for r in read_records(path, TrainingRow) if r.completion]


def find_pitfalls(
    run: RunFolder,
    config: RunConfig,
    task: Task,
    results: dict[str, Any],
    predictions: dict[str, list[dict[str, Any]]],
    transfer: dict[str, list[Example]] | None = None,
) -> dict[str, Any]:
    """Every check's numbers under `checks`, and the warnings they raise under `warnings`.
    The reference count and the train/test overlap check also cover each transfer set
    (`checks.transfer_references`, `checks.transfer_overlap`)."""
    guards = run_guards(run, config, task.kind, task.reference_match)
    warnings: list[Finding] = guards["warnings"]
    checks: dict[str, Any] = {"format": {}, **guards["checks"]}
    targets = _targets(run)
    for name, cand in results["candidates"].items():
        warnings += parse_failures(name, cand)
        student = cand["role"] == "student"
        check = format_check(predictions[name], targets if student else None, cand["max_tokens"])
        checks["format"][name] = check
        warnings += format_warnings(name, check)
    train_path, test_path = run.data_dir / "train.jsonl", run.data_dir / "test.jsonl"
    if train_path.exists() and test_path.exists():
        train = read_examples(train_path)
        test = read_examples(test_path)
        checks["references"] = reference_check(test)
        warnings += reference_warnings(task, checks["references"])
        checks["overlap"] = overlap_check(task, train, test, config.evaluate.overlap_ngram)
        warnings += overlap_warnings(checks["overlap"])
        for name, examples in (transfer or {}).items():
            counted = reference_check(examples)
            checks.setdefault("transfer_references", {})[name] = counted
            warnings += reference_warnings(task, counted, name)
            check = overlap_check(task, train, examples, config.evaluate.overlap_ngram)
            checks.setdefault("transfer_overlap", {})[name] = check
            warnings += overlap_warnings(check, name)
    warnings += ranking_disagreements(results["candidates"])
    warnings += too_few_examples(results["comparisons"])
    if "judge" in results:
        warnings += judge_warnings(results["judge"], results["candidates"])
    kinds = list(dict.fromkeys(w["check"] for w in warnings))
    warnings.sort(key=lambda w: kinds.index(w["check"]))  # grouped by check, stable within
    return {"checks": checks, "warnings": warnings}
