"""Thread memory on the real PostgreSQL, and fitting a history to a context window."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lucy.core.memory import (
    InMemoryThreadMemory,
    ThreadMemory,
    estimate_tokens,
    fit_history,
    message_tokens,
    recent_text,
    sanitize,
    user_message,
)
from lucy.errors import DatabaseError

CH, TS = "C0MEM", "1700000000.000100"


def call_group(cid: str, output: str) -> list[dict[str, Any]]:
    return [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": "T", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": cid, "content": output},
    ]


async def test_start_turn_stores_the_message_and_returns_the_history_before_it(pool: Any) -> None:
    memory = ThreadMemory(pool)
    first = user_message("hello", "U1", "Ada")
    assert await memory.start_turn("T1", CH, TS, slack_user="U1", message=first) == []
    await memory.append("T1", CH, TS, [{"role": "assistant", "content": "Hi Ada"}])
    second = user_message("again", "U1")
    history = await memory.start_turn("T1", CH, TS, slack_user="U1", message=second)
    assert history == [first, {"role": "assistant", "content": "Hi Ada"}]
    assert await memory.load("T1", CH, TS) == [*history, second]
    row = await pool.fetchrow("SELECT slack_user FROM thread_messages WHERE message = $1::jsonb", second)
    assert row["slack_user"] == "U1"


async def test_order_is_kept_for_a_batch(pool: Any) -> None:
    memory = ThreadMemory(pool)
    batch = [{"role": "user", "content": str(i)} for i in range(50)]
    await memory.append("T1", CH, TS, batch)
    assert await memory.load("T1", CH, TS) == batch


async def test_workspaces_never_see_each_others_threads(pool: Any) -> None:
    memory = ThreadMemory(pool)
    await memory.append("T1", CH, TS, [{"role": "user", "content": "T1 secret"},
                                       {"role": "assistant", "content": "noted"}])
    await memory.append("T10", CH, TS, [{"role": "user", "content": "T10 message"}])
    assert [m["content"] for m in await memory.load("T1", CH, TS)] == ["T1 secret", "noted"]
    assert [m["content"] for m in await memory.load("T10", CH, TS)] == ["T10 message"]
    assert await memory.has_thread("T1", CH, TS)
    assert not await memory.has_thread("T10", CH, TS)  # only a person wrote there; Lucy is not part of it
    assert not await memory.has_thread("T2", CH, TS)


async def test_a_seen_message_is_stored_with_its_speaker(pool: Any) -> None:
    memory = ThreadMemory(pool)
    await memory.append_user_message("T1", CH, TS, slack_user="U0BOB", text="ship friday", user_name="Bob")
    await memory.append_user_message("T1", CH, TS, slack_user="U0EVE", text="no, monday")
    assert [m["content"] for m in await memory.load("T1", CH, TS)] == [
        "Bob (<@U0BOB>): ship friday", "<@U0EVE>: no, monday"]


async def test_load_keeps_the_first_message_and_the_newest(pool: Any) -> None:
    memory = ThreadMemory(pool)
    await memory.append("T1", CH, TS, [{"role": "user", "content": str(i)} for i in range(20)])
    assert [m["content"] for m in await memory.load("T1", CH, TS, limit=5)] == ["0", "15", "16", "17", "18", "19"]


async def test_concurrent_turns_in_one_thread_lose_nothing(pool: Any) -> None:
    memory = ThreadMemory(pool)
    await asyncio.gather(*(memory.start_turn("T1", CH, TS, slack_user=f"U{i}", message=user_message(str(i), f"U{i}"))
                           for i in range(10)))
    assert len(await memory.load("T1", CH, TS)) == 10


async def test_a_database_failure_is_a_lucy_error(db_dsn: str) -> None:
    from lucy.db.pool import create_pool

    pool = await create_pool(db_dsn, min_size=1, max_size=1)
    await pool.execute("DROP TABLE thread_messages")
    memory = ThreadMemory(pool)
    try:
        with pytest.raises(DatabaseError) as raised:
            await memory.load("T1", CH, TS)
        assert raised.value.user_message == "I can't reach my database right now. Please try again in a minute."
    finally:
        await pool.close()


async def test_the_in_memory_store_behaves_the_same() -> None:
    memory = InMemoryThreadMemory()
    first = user_message("hi", "U1")
    assert await memory.start_turn("T1", CH, TS, slack_user="U1", message=first) == []
    await memory.append("T1", CH, TS, [{"role": "assistant", "content": "hello"}])
    assert await memory.has_thread("T1", CH, TS) and not await memory.has_thread("T2", CH, TS)
    assert await memory.load("T1", CH, TS) == [first, {"role": "assistant", "content": "hello"}]


# --- sanitize and fit --------------------------------------------------------------------------------


def test_sanitize_gives_every_call_one_result_and_drops_strays() -> None:
    broken = [
        {"role": "tool", "tool_call_id": "stray", "content": "orphan"},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "T", "arguments": '{"x": '}},
            {"id": "b", "type": "function", "function": {"name": "T", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "b", "content": "B"},
        {"role": "tool", "tool_call_id": "b", "content": "B again"},
        {"role": "assistant", "content": "done"},
    ]
    fixed = sanitize(broken)
    assert [m["role"] for m in fixed] == ["user", "assistant", "tool", "tool", "assistant"]
    assert fixed[1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert [(m["tool_call_id"], m["content"]) for m in fixed[2:4]] == [
        ("a", "(no result was recorded for this call)"), ("b", "B")]


def test_a_history_that_fits_is_unchanged() -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert fit_history(history, 1000) == history


def test_fitting_shortens_old_tool_output_before_dropping_anything() -> None:
    history = [{"role": "user", "content": "start"}]
    for i in range(6):
        history += call_group(f"c{i}", "x" * 3000)
    full = estimate_tokens(history)
    fitted = fit_history(history, full * 3 // 4)
    assert len(fitted) == len(history)
    assert fitted[2]["content"].endswith("(older tool output shortened)")
    assert fitted[-1]["content"] == "x" * 3000  # the latest exchanges keep theirs


def test_fitting_drops_the_oldest_exchanges_but_keeps_the_first_message_and_pairs() -> None:
    history = [{"role": "user", "content": "the topic"}]
    for i in range(200):
        history += [{"role": "user", "content": f"question {i} " + "w " * 100},
                    *call_group(f"c{i}", "r" * 300),
                    {"role": "assistant", "content": f"answer {i}"}]
    budget = 3000
    fitted = fit_history(history, budget)
    assert sum(message_tokens(m) for m in fitted) <= budget
    assert fitted[0]["content"].startswith("the topic") and "not shown" in fitted[0]["content"]
    assert fitted[-1] == {"role": "assistant", "content": "answer 199"}
    assert fitted[1]["role"] != "tool"
    ids = [c["id"] for m in fitted if m.get("tool_calls") for c in m["tool_calls"]]
    assert ids == [m["tool_call_id"] for m in fitted if m["role"] == "tool"]


def test_a_huge_first_message_is_cut_not_fatal() -> None:
    history = [{"role": "user", "content": "z" * 100_000}, {"role": "assistant", "content": "ok"}]
    fitted = fit_history(history, 2000)
    assert sum(message_tokens(m) for m in fitted) <= 2000 and fitted[-1] == {"role": "assistant", "content": "ok"}


def test_the_fast_estimate_never_undercounts_a_real_tokenizer() -> None:
    import litellm

    samples = [
        {"role": "user", "content": "Ada (<@U1>): please file an issue about the login page " * 20},
        {"role": "user", "content": "日本語のメッセージです。ログインできません。" * 20},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "GITHUB_CREATE_AN_ISSUE", "arguments": '{"owner": "acme", "repo": "app", "title": "x"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"number": 7, "url": "https://github.com/a/b/7"}' * 30},
        {"role": "user", "content": "Ada (<@U0ADA>): see <https://github.com/acme/app/pull/123|PR #123>, <@U0B>?" * 9},
        {"role": "user", "content": "def double(x: int) -> int:\n    return x * 2  # twice\n" * 20},
    ]
    for message in samples:
        assert message_tokens(message) >= litellm.token_counter(model="gpt-4o-mini", messages=[message])


def test_recent_text_is_the_newest_words() -> None:
    history = [{"role": "user", "content": "old " * 1000}, *call_group("c", "tool noise"),
               {"role": "assistant", "content": "the newest"}]
    text = recent_text(history, max_chars=200)
    assert text.endswith("the newest") and "tool noise" not in text and len(text) <= 200
