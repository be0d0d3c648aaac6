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


class IntegrationUnavailableError(IntegrationError):
    """Composio is down, failing, or answered with something unreadable."""

    user_message = "The app integration service (Composio) isn't answering right now. Please try again in a minute."


class IntegrationTimeoutError(IntegrationUnavailableError):
    user_message = "The app integration service (Composio) took too long to answer. Please try again in a minute."


class IntegrationAuthError(IntegrationError):
    """Composio rejected Lucy's API key (401/403)."""

    user_message = (
        "Composio rejected Lucy's API key, so I can't use any apps. An admin needs to check COMPOSIO_API_KEY."
    )


class IntegrationRateLimitedError(IntegrationError):
    """Composio answered 429 and would not let us retry in time."""

    user_message = "The app integration service (Composio) is rate-limiting me. Please try again in a minute."

    def __init__(self, detail: str = "", *, retry_after: float | None = None, user_message: str | None = None) -> None:
        super().__init__(detail, user_message=user_message)
        self.retry_after = retry_after


class ConnectionMissingError(IntegrationError):
    """Composio has no connected account for this workspace and toolkit (error code 1803)."""

    user_message = "That app isn't connected for this workspace yet."


class LLMError(LucyError):
    """Every configured model failed."""

    user_message = "My language model isn't answering right now. Please try again in a minute."


class LLMContextError(LLMError):
    """The prompt is longer than the model's context window (the agent trims and retries)."""

    user_message = "This thread has grown too long for me to read at once. Please start a new thread."


class SlackError(LucyError):
    user_message = "I couldn't post to Slack."


class RateLimitedError(LucyError):
    """A rate limit was reached (lucy/ratelimit.py); ``user_message`` says how long to wait."""

    user_message = "You're going a bit fast for me. Please wait a moment and try again."

    def __init__(
        self,
        detail: str = "",
        *,
        user_message: str | None = None,
        retry_after: float | None = None,
        limit_name: str | None = None,
    ) -> None:
        super().__init__(detail, user_message=user_message)
        self.retry_after = retry_after  # seconds until one more request fits
        self.limit_name = limit_name  # user_turns | workspace_turns | user_tools | workspace_tools
