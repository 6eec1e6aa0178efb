"""The Hugging Face Hub: `potstill push` (push.py) and its cards (cards.py)."""


class HubError(ValueError):
    """A push that cannot go ahead (bad repo id, missing stage, no token, a refusal)."""
