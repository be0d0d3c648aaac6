"""How a request's words are read: the action it asks for (phrasal verbs, clauses), a tool's actions."""

from __future__ import annotations

import pytest

from lucy.integrations.selection_text import (
    CREATE,
    DELETE,
    READ,
    UPDATE,
    action_cue,
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


@pytest.mark.parametrize(
    ("slug", "actions"),
    [
        # "request" of "pull request" and "run" of "workflow run" name things; the first verb acts.
        ("DISMISS_A_REVIEW_FOR_A_PULL_REQUEST", {UPDATE}),
        ("REVIEW_PENDING_DEPLOYMENTS_FOR_A_WORKFLOW_RUN", set()),
        # Older slugs put the verb after the resource: "calendar list" is the resource here.
        ("CALENDAR_LIST_INSERT", {CREATE}),
        ("SESSIONS_GET_DEBUG", {READ}),
        ("RESCHEDULE_POST", {UPDATE}),
        ("UNLIKE_POST_OR_COMMENT", {DELETE}),
    ],
)
def test_a_tools_action_comes_from_its_verb_not_from_a_noun(slug: str, actions: set[str]) -> None:
    assert tool_actions(words(slug)) == actions


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("close acme/web#12, it's a dupe", (UPDATE, 1.0)),  # an imperative opens the clause
        ("who closed acme/web#12?", (READ, 1.0)),  # a question word
        # Only a verb inside a clause: maybe the ask, maybe what happened ("the PR we merged").
        ("we need to close acme/web#12", (UPDATE, 0.5)),
        ("acme/web#12", (None, 0.0)),
    ],
)
def test_how_surely_a_request_asks_for_an_action(text: str, cue: tuple[str | None, float]) -> None:
    assert action_cue(words(text), clause_starts(text)) == cue
