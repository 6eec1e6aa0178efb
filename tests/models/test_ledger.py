"""The spending ledger in calls.sqlite: what budgeted calls cost, kept across processes."""

from pathlib import Path

from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.cost import Budget, Price
from potstill.models.ledger import SpendLedger

PRICE = Price(input_per_1m=100.0, output_per_1m=100.0)
REQUEST = ChatRequest([{"role": "user", "content": "z" * 400}], max_tokens=116)  # worst $0.06
ANSWER = ChatResponse("a", prompt_tokens=100, completion_tokens=0)  # $0.01


def test_a_call_in_flight_when_the_process_died_counts_in_the_next_run(tmp_path: Path) -> None:
    db = tmp_path / "calls.sqlite"
    first = Budget(max_usd=0.25, price=PRICE, ledger=SpendLedger(db))
    assert first.admit(0, REQUEST, "a") is None
    assert first.admit(1, REQUEST, "b") is None
    first.settle(0, ANSWER, "a", fresh=True)
    # The process dies here: call b was sent and never settled.
    again = Budget(max_usd=0.25, price=PRICE, ledger=SpendLedger(db))
    assert abs(again.spent - (0.01 + 0.06)) < 1e-9
    # A stored answer the ledger counted already is not counted twice.
    again.settle(5, ANSWER, "a", fresh=False)
    assert abs(again.spent - 0.07) < 1e-9
    admitted = [again.admit(i, REQUEST, f"n{i}") is None for i in range(4)]
    assert admitted == [True, True, True, False]  # 0.07 + 3 x 0.06 <= 0.25 < 0.07 + 4 x 0.06


def test_stored_answers_of_a_run_from_before_the_ledger_still_count(tmp_path: Path) -> None:
    db = tmp_path / "calls.sqlite"
    budget = Budget(max_usd=1.0, price=PRICE, ledger=SpendLedger(db))
    budget.settle(0, ANSWER, "old", fresh=False)  # answered while the run had no budget
    assert abs(budget.spent - 0.01) < 1e-9
    again = Budget(max_usd=1.0, price=PRICE, ledger=SpendLedger(db))  # now in the ledger
    again.settle(0, ANSWER, "old", fresh=False)
    assert abs(again.spent - 0.01) < 1e-9
