"""How a request's words are read: the action a phrasal verb asks for."""

from __future__ import annotations

import pytest

from lucy.integrations.selection_text import CREATE, DELETE, READ, UPDATE, request_action, words


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
