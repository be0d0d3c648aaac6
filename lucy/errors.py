"""Lucy's exception tree.

Every error a person can run into carries ``user_message``: one plain sentence that the Slack
layer (or the terminal) shows as is. The details go to the logs, never to the person.
"""

from __future__ import annotations


class LucyError(Exception):
    """Base of every error Lucy raises on purpose."""

    user_message: str = "Something went wrong on my side. Please try again in a moment."

    def __init__(self, detail: str = "", *, user_message: str | None = None) -> None:
        super().__init__(detail or self.user_message)
        if user_message is not None:
            self.user_message = user_message


class ConfigError(LucyError):
    """A setting is missing or malformed. The message names the variable and where to get it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, user_message=message)


class DatabaseError(LucyError):
    user_message = "I can't reach my database right now. Please try again in a minute."


class MigrationError(DatabaseError):
    """A migration failed, or an applied migration file was edited afterwards."""


class IntegrationError(LucyError):
    """Talking to Composio failed."""

    user_message = "I couldn't reach the app integration service (Composio). Please try again shortly."


class ToolNotFoundError(IntegrationError):
    user_message = "I tried to use a tool that doesn't exist."


class ToolExecutionError(IntegrationError):
    user_message = "The app didn't accept that action."


class LLMError(LucyError):
    """Every configured model failed."""

    user_message = "My language model isn't answering right now. Please try again in a minute."


class SlackError(LucyError):
    user_message = "I couldn't post to Slack."


class RateLimitedError(LucyError):
    user_message = "You're going a bit fast for me. Please wait a moment and try again."
