"""The Hugging Face Hub: `potstill push` (push.py) and its cards (cards.py)."""

from potstill.errors import UserError


class HubError(UserError, ValueError):
    """A push that cannot go ahead (bad repo id, missing stage, no token, a refusal)."""
