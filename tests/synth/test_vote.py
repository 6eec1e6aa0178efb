from potstill.synth.vote import majority_vote
from potstill.tasks import Parsed


def ok(answer: str, rationale: str | None = "because") -> Parsed:
    return Parsed("ok", answer, rationale, answer)


def test_majority_wins_and_the_chosen_sample_agrees_with_it() -> None:
    samples = [ok("4", "a" * 5), ok("5", "b" * 2), ok("5", "c" * 5), ok("4", "d"), ok("5", "e" * 9)]
    vote = majority_vote(samples, ["stop"] * 5)
    assert vote.answer == "5" and vote.votes == {"4": 2, "5": 3}
    # Of the three that agree (lengths 2, 5, 9), the median rationale; not sample 0's answer.
    assert vote.chosen == 2


def test_among_equally_long_rationales_the_earliest_agreeing_sample_is_chosen() -> None:
    samples = [ok("4", "a"), ok("5", "b"), ok("5", "c"), ok("4", "d"), ok("5", "e")]
    assert majority_vote(samples, ["stop"] * 5).chosen == 1


def test_a_tie_goes_to_the_answer_seen_first_and_failures_do_not_vote() -> None:
    samples = [Parsed("malformed"), ok("7"), ok("8"), Parsed("no_answer")]
    vote = majority_vote(samples, ["stop"] * 4)
    assert (vote.answer, vote.votes, vote.chosen) == ("7", {"7": 1, "8": 1}, 1)


def test_the_chosen_rationale_is_complete_reasoned_and_of_median_length() -> None:
    samples = [
        ok("3", "x" * 80),  # cut off: finish_reason length
        ok("3", None),  # no reasoning
        ok("3", "x" * 5),  # terse
        ok("3", "x" * 40),  # the median of the complete, reasoned ones
        ok("3", "x" * 300),  # rambling
        ok("9", "x" * 40),  # disagrees
    ]
    finishes = ["length", "stop", "stop", "stop", "stop", "stop"]
    assert majority_vote(samples, finishes).chosen == 3


def test_no_parsed_sample_leaves_sample_zero_standing() -> None:
    vote = majority_vote([Parsed("no_answer"), Parsed("malformed")], ["stop", "stop"])
    assert (vote.answer, vote.votes, vote.chosen) == (None, {}, 0)
