"""How a request's words are read: the action it asks for (phrasal verbs, clauses), a tool's actions."""

from __future__ import annotations

import pytest

from lucy.integrations.selection_text import (
    CREATE,
    DELETE,
    READ,
    UPDATE,
    clause_starts,
    request_action,
    tool_actions,
    words,
)


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("check off the groceries task", UPDATE),  # "check … off" marks done; "check" alone reads
        ("check the calendar for friday", READ),
        ("take dana off the design repo", DELETE),
        ("hook the repo up to our build server", CREATE),
        ("show me open issues", READ),
    ],
)
def test_a_verb_with_its_particle_asks_for_the_phrases_action(text: str, action: str) -> None:
    assert request_action(words(text)) == action


@pytest.mark.parametrize(
    ("text", "action"),
    [
        # Context first, then the ask: the imperative clause says what to do.
        ("raj is on parental leave, unassign him from the issue", DELETE),
        ("acme/api#2210 is a wontfix, close it as not planned", UPDATE),
        ("the offsite is off, take it off my calendar", DELETE),
        # A question stays a question; a noun that looks like a verb does not start a clause.
        ("who closed the login issue? it was open yesterday", READ),
        ("how many people saw the webinar post? post id 104881", READ),
        ("the hook (hook 4412) fails, show me its deliveries", READ),
        # A phrase of the lexicon, not its first word: "get rid of" deletes.
        ("get rid of the old jenkins webhook", DELETE),
    ],
)
def test_the_imperative_clause_decides_the_action(text: str, action: str) -> None:
    assert request_action(words(text), clause_starts(text)) == action


def test_a_create_or_update_tool_does_both() -> None:
    assert tool_actions(words("CREATE_OR_UPDATE_A_REPOSITORY_SECRET")) == {CREATE, UPDATE}
    assert tool_actions(words("LIST_REPOSITORY_SECRETS")) == {READ}
