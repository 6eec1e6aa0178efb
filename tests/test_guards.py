"""Guard rails on a meaningless run: the teacher's yield and answer spread, and students too
small, too short or too flat to have learnt anything, each a warning with numbers and a fix."""

from __future__ import annotations

from run_records import teacher_row, train_log

from potstill.config import ChecksConfig
from potstill.guards import (
    loss_ends,
    student_figures,
    student_warnings,
    teacher_figures,
    teacher_warnings,
)
from potstill.records import TeacherRow

CHECKS = ChecksConfig()


def _record(answer: str | None, rejected: str | None, reference: str | None = None) -> TeacherRow:
    """A synth/teacher.jsonl row whose reply gave `answer` (`rejected`: why it was not kept)."""
    status = "ok" if rejected in (None, "disagrees_with_reference") else "no_answer"
    return teacher_row(
        reference=reference,
        status=status,
        answer=answer if status == "ok" else None,
        raw_answer=answer,
        rejected=rejected,
    )


def test_a_low_yield_names_the_reasons_that_dominate_and_their_fix() -> None:
    # 24 replies: 19 outside the label set, 4 wrong, 1 kept (the routing case of issue 12).
    records = [_record("payment", "no_answer")] * 12 + [_record("delivery", "no_answer")] * 7
    records += [_record("billing", "disagrees_with_reference", "shipping")] * 4
    records += [_record("billing", None, "billing")]
    figures = teacher_figures(records, "classification", discrete=True)
    assert (figures["labelled"], figures["accepted"], figures["outside"]) == (24, 1, 19)
    (warning,) = teacher_warnings(figures, "classification", CHECKS)
    assert warning["check"] == "teacher_yield" and warning["subject"] == "teacher"
    message = warning["message"]
    assert "the teacher's yield is 4.2%: 1 of 24 inputs became training rows" in message
    assert "below 30.0%, checks.min_teacher_yield" in message
    assert (
        "19 of 24 replies were outside the label set (most often 'payment' 12, 'delivery' 7): "
        "add what the teacher says as synonyms (task.synonyms)" in message
    )
    assert "4 of 24 replies disagreed with the reference" not in message  # 19 cover 80%
    # The same rejections on a math task have no label set: no answer, show the format.
    math = teacher_figures(records, "math", discrete=True)
    assert "19 of 24 replies held no answer" in teacher_warnings(math, "math", CHECKS)[0]["message"]


def test_a_good_yield_is_quiet_and_the_threshold_is_configurable() -> None:
    records = [_record(str(i), None, str(i)) for i in range(6)]
    records += [_record("7", "disagrees_with_reference", "8")] * 4
    figures = teacher_figures(records, "math", discrete=True)
    assert teacher_warnings(figures, "math", CHECKS) == []  # 60% kept, answers all different
    strict = ChecksConfig(min_teacher_yield=0.7)
    (warning,) = teacher_warnings(figures, "math", strict)
    assert (
        "4 of 10 replies disagreed with the reference: the teacher is wrong" in (warning["message"])
    )


def test_one_answer_to_nearly_every_input_is_called_a_constant() -> None:
    # The packaged teacher on real review sentences: "positive" to 556 of 570.
    records = [_record("positive", None, "positive" if i % 2 else "negative") for i in range(556)]
    records += [_record("negative", None, "negative")] * 14
    figures = teacher_figures(records, "classification", discrete=True)
    assert figures["answers"]["answer"] == "positive" and figures["answers"]["kept"] == 556
    (warning,) = teacher_warnings(figures, "classification", CHECKS)
    assert warning["check"] == "teacher_constant_answer"
    message = warning["message"]
    assert "'positive' in 556 of 570 kept rows (97.5%; at most 90.0%" in message
    assert "learns to say 'positive' whatever the input" in message
    assert "the references give it to 278 of 570 (48.8%): the bias is the teacher's" in message
    # References as skewed as the teacher: the data is imbalanced, not the teacher biased.
    skewed = [r.model_copy(update={"reference": r.answer}) for r in records]
    text = teacher_warnings(teacher_figures(skewed, "classification", True), "x", CHECKS)
    assert "the data itself is this imbalanced" in text[0]["message"]
    # Open text (summaries) has no discrete answer to count.
    assert "answers" not in teacher_figures(records, "summarization", discrete=False)


def test_a_student_too_small_too_short_and_flat_gets_every_warning() -> None:
    # The student of issue 12: 3 rows, 2 optimizer steps, the first at learning rate 0.
    log = train_log(
        {"step": 1, "loss": 2.50}, {"step": 2, "loss": 2.49}, {"step": 2, "eval_loss": 2.6}
    )
    figures = student_figures(3, 2, 1, log)
    assert figures == {
        "rows": 3,
        "steps": 2,
        "warmup_steps": 1,
        "loss_start": 2.5,
        "loss_end": 2.49,
    }
    found = {w["check"]: w["message"] for w in student_warnings("tiny", figures, CHECKS)}
    assert set(found) == {"student_rows", "student_steps", "student_loss"}
    assert "tiny was trained on 3 rows (fewer than 50" in found["student_rows"]
    steps = found["student_steps"]
    assert "2 optimizer steps (fewer than 20, checks.min_optimizer_steps)" in steps
    # The long warm-up is a consequence of the few steps, said with them.
    assert "warm-up took 1 of its 2 optimizer steps (50.0%; at most 25.0%" in steps
    loss = found["student_loss"]
    assert loss.startswith("tiny's training loss hardly fell: 2.500 over the first quarter")
    assert "2.490 over the last (down 0.4%; at least 5.0% expected" in loss
    rising = student_figures(3, 2, 1, train_log({"loss": 2.0}, {"loss": 2.2}))
    (loss,) = [w["message"] for w in student_warnings("t", rising, CHECKS) if "loss" in w["check"]]
    assert (
        "did not fall: 2.000 over the first quarter of its steps, 2.200 over the last (up" in loss
    )
    # Alone (the steps limit lowered), the warm-up is a warning of its own.
    alone = student_warnings("tiny", figures, ChecksConfig(min_optimizer_steps=2))
    (warmup,) = [w["message"] for w in alone if w["check"] == "student_warmup"]
    assert warmup.startswith("tiny: warm-up took 1 of its 2 optimizer steps (50.0%")


def test_a_student_that_learnt_is_quiet() -> None:
    log = train_log(*({"loss": 2.0 - 0.05 * s} for s in range(32)))
    figures = student_figures(122, 32, 2, log)
    assert loss_ends(log) == (2.0 - 0.05 * 3.5, 2.0 - 0.05 * 27.5)
    assert student_warnings("distilled", figures, CHECKS) == []
    # A summary from before the figures existed (no warm-up count) skips that check only.
    assert student_warnings("old", {**figures, "warmup_steps": None}, CHECKS) == []
    assert loss_ends(train_log({"loss": 1.0})) is None
    lenient = ChecksConfig(min_student_rows=2, min_optimizer_steps=1, min_loss_drop=0.0)
    flat = student_figures(3, 2, 0, log[:2])
    assert student_warnings("tiny", flat, lenient) == []
