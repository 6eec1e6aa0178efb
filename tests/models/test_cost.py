from potstill.config import ModelConfig
from potstill.models.base import ChatRequest, ChatResponse
from potstill.models.cost import Budget, Price, Spend, call_cost, price_of
from potstill.models.tokens import heuristic_prompt_tokens

PRICE = Price(input_per_1m=2.0, output_per_1m=10.0)


def test_prices_are_per_million_tokens_and_a_local_model_costs_nothing() -> None:
    assert call_cost(PRICE, 1_000_000, 0) == 2.0
    assert call_cost(PRICE, 500, 100) == (500 * 2.0 + 100 * 10.0) / 1e6
    assert call_cost(None, 10_000, 10_000) == 0.0
    spend = Spend()
    spend.add(ChatResponse("a", prompt_tokens=100, completion_tokens=10), PRICE)
    spend.add(ChatResponse("b", prompt_tokens=50, completion_tokens=5), PRICE)
    assert spend.to_json() == {
        "calls": 2,
        "prompt_tokens": 150,
        "completion_tokens": 15,
        "usd": round((150 * 2 + 15 * 10) / 1e6, 6),
    }


def test_the_heuristic_counts_characters_and_chat_overhead() -> None:
    messages = [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 9}]
    assert heuristic_prompt_tokens(messages) == 3 + (4 + 10) + (4 + 3)
    assert heuristic_prompt_tokens(messages, chars_per_token=2.0) == 3 + (4 + 20) + (4 + 5)


def test_the_budget_reserves_the_worst_case_of_calls_in_flight() -> None:
    request = ChatRequest([{"role": "user", "content": "z" * 400}], max_tokens=116)
    budget = Budget(max_usd=0.25, price=Price(input_per_1m=100.0, output_per_1m=100.0))
    worst = budget.worst_case(request)  # (64 + 16 + 4 + 400 prompt + 116 completion) tokens
    assert abs(worst - 0.06) < 1e-9
    admitted = [budget.admit(i, request, f"k{i}") is None for i in range(10)]
    assert admitted == [True] * 4 + [False] * 6  # 4 x 0.06 fits in $0.25, a fifth would not
    assert "budget.max_usd $0.25 reached" in (budget.admit(99, request, "k99") or "")
    cheap = ChatResponse("a", prompt_tokens=100, completion_tokens=0)  # $0.01, not $0.06
    budget.settle(0, cheap, "k0", fresh=True)
    budget.settle(1, cheap, "k1", fresh=True)
    assert budget.admit(10, request, "k10") is None  # 0.02 spent + 3 x 0.06 in flight
    assert budget.admit(11, request, "k11") is not None
    assert Budget(max_usd=None, price=PRICE).admit(0, request, "k") is None


def test_a_call_that_may_have_been_billed_counts_at_its_worst_case() -> None:
    request = ChatRequest([{"role": "user", "content": "z" * 400}], max_tokens=116)
    budget = Budget(max_usd=1.0, price=Price(input_per_1m=100.0, output_per_1m=100.0))
    outcomes = [
        ChatResponse(None, "error", error="timed out", error_kind="timeout"),  # may be billed
        ChatResponse(None, "error", error="reset", error_kind="connection"),
        ChatResponse("x"),  # an answer without usage: its cost is unknown
        ChatResponse(None, "error", error="429", error_kind="rate_limited"),  # refused: free
        ChatResponse(None, "error", error="503", error_kind="http_503"),
    ]
    for i, response in enumerate(outcomes):
        assert budget.admit(i, request, f"k{i}") is None
        budget.settle(i, response, f"k{i}", fresh=True)
    assert abs(budget.spent - 3 * 0.06) < 1e-9


def test_the_worst_case_never_undercounts_a_real_tokenizer(smollm2_tokenizer_dir: object) -> None:
    from potstill.models.tokens import tokenizer_counter, worst_case_prompt_tokens

    count = tokenizer_counter(str(smollm2_tokenizer_dir))
    texts = [
        "Plain English words.",
        "猫が窓の外を見ている。" * 20,
        "🙂🚀" * 50,
        "مرحبا بالعالم " * 20,
    ]
    for text in texts:
        messages = [{"role": "system", "content": "Answer."}, {"role": "user", "content": text}]
        assert worst_case_prompt_tokens(messages) >= count(messages), text
    # The characters / 4 estimate (kept for the dry run) falls short on such text.
    emoji = [{"role": "user", "content": "🙂🚀" * 50}]
    assert heuristic_prompt_tokens(emoji) < count(emoji)


def test_a_tokenizer_counts_prompt_tokens_exactly(smollm2_tokenizer_dir: object) -> None:
    from transformers import AutoTokenizer

    from potstill.models.tokens import tokenizer_counter

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    count = tokenizer_counter(str(smollm2_tokenizer_dir))
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert count(messages) == len(tokenizer(text, add_special_tokens=False)["input_ids"]) > 10


def test_a_price_needs_both_halves_in_the_model_config() -> None:
    both = ModelConfig(model="m", price_per_million_input=2.0, price_per_million_output=10.0)
    assert price_of(both) == PRICE
    assert price_of(ModelConfig(model="m", price_per_million_input=2.0)) is None
    assert price_of(ModelConfig(model="m")) is None
