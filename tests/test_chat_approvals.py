"""`lucy chat` with Composio: a risky call is shown at the prompt and runs only after ``y``."""

from __future__ import annotations

from lucy.config import Settings
from tests.fakes.fake_composio import FakeComposio
from tests.fakes.fake_llm import FakeLLM, text, tool_call
from tests.test_chat import chat, settings_for

DELETE = "GITHUB_DELETE_A_REPOSITORY"
REPO = {"owner": "acme", "repo": "old-site"}


def composio_settings(fake_llm: FakeLLM, composio: FakeComposio, db_dsn: str) -> Settings:
    return settings_for(fake_llm, COMPOSIO_API_KEY=composio.api_key, COMPOSIO_BASE_URL=composio.base_url,
                        DATABASE_URL=db_dsn, LUCY_EMBEDDING_MODEL="off")


async def test_yes_at_the_prompt_runs_it_and_the_turn_answers(fake_llm: FakeLLM, db_dsn: str) -> None:
    async with FakeComposio() as composio:
        composio.connect("T0CHAT", "github")
        composio.set_result(DELETE, {"deleted": True})
        fake_llm.script([tool_call("search_tools", {"query": "delete a github repository"}), tool_call(DELETE, REPO),
                         text("Deleted acme/old-site.")])
        output = await chat(composio_settings(fake_llm, composio, db_dsn), ["delete acme/old-site", "y"])

    assert "Delete a repository (GitHub). This can't be undone." in output
    assert "Owner: acme" in output and "Repo: old-site" in output and "Approve? [y/N]" in output
    assert output.index("Approve? [y/N]") < output.index("lucy> Deleted acme/old-site.")
    assert [(e.user_id, e.slug) for e in composio.executes] == [("T0CHAT", DELETE)]


async def test_anything_but_yes_denies_and_the_model_is_told(fake_llm: FakeLLM, db_dsn: str) -> None:
    async with FakeComposio() as composio:
        composio.connect("T0CHAT", "github")
        fake_llm.script([tool_call("search_tools", {"query": "delete a github repository"}), tool_call(DELETE, REPO),
                         text("OK, I left it alone.")])
        output = await chat(composio_settings(fake_llm, composio, db_dsn), ["delete acme/old-site", "no"])

    assert composio.executes == []
    assert "lucy> OK, I left it alone." in output
    assert "denied this, so it did not run" in str(fake_llm.requests[-1].messages[-1]["content"])
