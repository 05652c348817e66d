"""Conversation errors; the API maps each class to one HTTP status."""

from __future__ import annotations


class ConversationError(Exception):
    """Base of what the conversation service refuses; `status` is the HTTP status it maps to."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ConversationError):
    """Unknown, or another owner's: the two look the same."""

    status = 404


class Invalid(ConversationError):
    status = 422


class TooLarge(ConversationError):
    status = 413


class Malformed(ConversationError):
    """Input that cannot even be read (JSON nested past the parser's depth)."""

    status = 400


class Unavailable(ConversationError):
    """Something the answer needs is away for now (the embedding model that searches knowledge bases)."""

    status = 503
