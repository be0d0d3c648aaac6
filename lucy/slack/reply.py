"""One answer in one thread: instant feedback, progress while tools run, then the streamed answer.

Order of preference, each step falling back when Slack says no:

1. Feedback: ``assistant.threads.setStatus`` ("is thinking…"), else a 👀 reaction on the message.
2. Answer: ``chat.startStream`` / ``appendStream`` / ``stopStream`` (Markdown, tool progress as task
   updates in a timeline), else ``chat.postMessage`` + ``chat.update`` of one message (mrkdwn,
   progress in italics, edits throttled to Slack's Tier 3 budget).
3. Long answers: the streamed message holds up to ``STREAM_LIMIT`` characters, the rest follows in
   posts of at most :data:`~lucy.slack.markdown.MESSAGE_LIMIT`, code blocks closed and reopened.

Rate limits are waited out by the client's retry handler (see ``app.make_client``), so a 429 delays
the answer rather than dropping it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.models.messages.chunk import TaskUpdateChunk
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from lucy.core.types import ExecuteResult, NeedsApproval, NeedsConnection, ToolCall
from lucy.log import get_logger
from lucy.slack.blocks import Block, section
from lucy.slack.markdown import MESSAGE_LIMIT, cut_point, split_message, to_mrkdwn
from lucy.slack.progress import describe_call

log = get_logger("lucy.slack.reply")

STREAM_LIMIT = 10_000  # characters in one streamed message (Slack: 12,000 per markdown call)
STREAM_PIECE = 4_000  # characters per appendStream call
STREAM_BUFFER = 600  # fewer appendStream calls (Tier 4) at the cost of coarser streaming
EDIT_INTERVAL = 1.5  # seconds between chat.update edits of the fallback message (Tier 3)
THINKING = "is thinking…"
LOADING_MESSAGES = ["Thinking…", "Reading the thread…", "Working on it…"]
REACTION = "eyes"

_SlackErrors = (SlackApiError, SlackRequestError)


@dataclass(frozen=True)
class ReplyTarget:
    """Where the answer goes and whom it is for."""

    channel: str
    thread_ts: str
    message_ts: str  # the person's message (for the reaction)
    user_id: str
    team_id: str | None  # recipient_team_id for streams in channels


class ThreadReply:
    """The :class:`~lucy.core.types.ProgressSink` for one turn, and its final answer."""

    def __init__(
        self,
        client: AsyncWebClient,
        target: ReplyTarget,
        *,
        streaming: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._t = target
        self._clock = clock
        self._mode = "stream" if streaming else "post"
        self._stream: AsyncChatStream | None = None
        self._stream_broken = False
        self._status_ok = False
        self._reacted = False
        self._text = ""  # everything the model streamed
        self._paragraph_due = False  # a tool ran since the last words: the next words start a paragraph
        self._sent = ""  # the part of it that went into the streamed message
        self._tasks: dict[str, tuple[str, str]] = {}  # call id → (title, status)
        self._placeholder_ts: str | None = None
        self._last_edit = float("-inf")
        self.posted: list[str] = []  # ts of every message this reply wrote

    @property
    def mode(self) -> str:
        return self._mode

    # --- feedback ------------------------------------------------------------------------------

    async def acknowledge(self) -> None:
        """Show at once that Lucy is on it."""
        try:
            await self._client.assistant_threads_setStatus(
                channel_id=self._t.channel, thread_ts=self._t.thread_ts, status=THINKING,
                loading_messages=LOADING_MESSAGES,
            )
            self._status_ok = True
            return
        except _SlackErrors as exc:
            log.debug("thinking status not available; reacting instead", error=_error_of(exc))
        try:
            await self._client.reactions_add(channel=self._t.channel, timestamp=self._t.message_ts, name=REACTION)
            self._reacted = True
        except _SlackErrors as exc:
            log.info("could not react to the message", error=_error_of(exc))

    async def _set_status(self, status: str) -> None:
        if not self._status_ok:
            return
        try:
            await self._client.assistant_threads_setStatus(
                channel_id=self._t.channel, thread_ts=self._t.thread_ts, status=status)
        except _SlackErrors as exc:
            log.debug("status update failed", error=_error_of(exc))

    # --- ProgressSink ----------------------------------------------------------------------------

    async def tool_started(self, call: ToolCall) -> None:
        self._paragraph_due = bool(self._text)
        title = describe_call(call)
        self._tasks[call.id] = (title, "in_progress")
        await self._set_status(f"is {title[:1].lower()}{title[1:]}…")
        await self._show_task(call.id)

    async def tool_finished(self, call: ToolCall, result: ExecuteResult) -> None:
        title = self._tasks.get(call.id, (describe_call(call), ""))[0]
        self._tasks[call.id] = (title, _task_status(result))
        await self._show_task(call.id)
        await self._set_status(THINKING)

    async def text_delta(self, text: str) -> None:
        if not text:
            return
        if self._paragraph_due:
            self._paragraph_due = False
            text = "\n\n" + text.lstrip()
        self._text += text
        if self._mode == "stream":
            room = STREAM_LIMIT - len(self._sent)
            if len(text) <= room and not self._stream_broken:
                await self._stream_append(text)
            return
        await self._maybe_edit_placeholder()

    # --- the answer ------------------------------------------------------------------------------

    async def finish(self, markdown: str, extra_blocks: list[Block] | None = None) -> None:
        """Write the final answer (Markdown) with optional buttons below it."""
        markdown = markdown.strip() or "Done."
        done = False
        if self._mode == "stream" and not self._stream_broken:
            try:
                done = await self._finish_stream(markdown, extra_blocks)
            except _SlackErrors as exc:
                log.warning("streaming the answer failed; posting it instead", error=_error_of(exc))
                self._stream_broken = True
        if self._stream is not None and self._stream.ts and self._stream.ts not in self.posted:
            self.posted.append(self._stream.ts)
        if not done:
            await self._finish_posts(markdown, extra_blocks)
        await self._cleanup()

    async def fail(self, sentence: str) -> None:
        """Whatever went wrong, one plain sentence in the thread; never raises."""
        try:
            await self.finish(sentence)
            return
        except _SlackErrors as exc:
            log.warning("could not write the failure into the reply; posting it plainly", error=_error_of(exc))
        try:
            await self._post(sentence)
        except _SlackErrors as exc:
            log.error("could not tell the person that their request failed", error=_error_of(exc))

    # --- streaming -------------------------------------------------------------------------------

    async def _ensure_stream(self) -> AsyncChatStream:
        if self._stream is None:
            self._stream = await self._client.chat_stream(
                buffer_size=STREAM_BUFFER, channel=self._t.channel, thread_ts=self._t.thread_ts,
                recipient_team_id=self._t.team_id, recipient_user_id=self._t.user_id,
                task_display_mode="timeline",
            )
        return self._stream

    async def _stream_call(self, *, markdown_text: str | None = None, chunks: list[Any] | None = None) -> None:
        """One append; the first one starts the stream, and a refusal there switches to posting."""
        stream = await self._ensure_stream()
        started = stream.ts is not None
        try:
            await stream.append(markdown_text=markdown_text, chunks=chunks)
        except _SlackErrors as exc:
            if started:
                log.warning("the stream broke; the answer will replace it", error=_error_of(exc))
                self._stream_broken = True
                return
            log.info("streaming not available here; posting instead", error=_error_of(exc))
            self._mode = "post"
            self._stream = None
            await self._replay_into_posts()
            return
        if not started and stream.ts:
            self.posted.append(stream.ts)

    async def _stream_append(self, text: str) -> None:
        for start in range(0, len(text), STREAM_PIECE):
            piece = text[start:start + STREAM_PIECE]
            await self._stream_call(markdown_text=piece)
            if self._mode != "stream" or self._stream_broken:
                return
            self._sent += piece

    async def _show_task(self, call_id: str) -> None:
        title, status = self._tasks[call_id]
        if self._mode == "stream" and not self._stream_broken:
            await self._stream_call(chunks=[TaskUpdateChunk(id=call_id, title=title, status=status)])
        elif self._mode == "post" and not self._status_ok:
            await self._edit_placeholder(self._progress_mrkdwn())

    async def _finish_stream(self, markdown: str, extra_blocks: list[Block] | None) -> bool:
        """Finish in the stream; False when the answer must be posted instead (over the stream)."""
        stream = await self._ensure_stream()
        if self._sent and not markdown.startswith(self._sent):
            if markdown in self._sent:
                await stream.stop(blocks=extra_blocks)
                return True
            # The model streamed words that are not its final answer (an earlier step's):
            # close the stream and write the answer over it.
            await stream.stop()
            return False
        remaining = markdown[len(self._sent):]
        room = max(0, STREAM_LIMIT - len(self._sent))
        cut = cut_point(remaining, room) if len(remaining) > room else len(remaining)
        head, tail = remaining[:cut], remaining[cut:].lstrip("\n")
        if tail and (self._sent + head).count("```") % 2 == 1:
            head += "\n```"
            tail = "```\n" + tail
        await self._stream_append(head)
        if self._mode != "stream" or self._stream_broken:
            return False
        await stream.stop(blocks=None if tail else extra_blocks)
        if tail:
            await self._post_parts(split_message(to_mrkdwn(tail)), extra_blocks)
        return True

    async def _replay_into_posts(self) -> None:
        if not self._status_ok and self._tasks:
            await self._edit_placeholder(self._progress_mrkdwn())

    # --- posting ---------------------------------------------------------------------------------

    def _progress_mrkdwn(self) -> str:
        marks = {"in_progress": "…", "complete": " ✓", "error": " ✗", "pending": " (waiting)"}
        return "\n".join(f"_{title}{marks.get(status, '')}_" for title, status in self._tasks.values())

    async def _maybe_edit_placeholder(self) -> None:
        now = self._clock()
        if now - self._last_edit < EDIT_INTERVAL:
            return
        partial = to_mrkdwn(self._text)
        if len(partial) > MESSAGE_LIMIT - 2:
            partial = partial[: cut_point(partial, MESSAGE_LIMIT - 2)]
        await self._edit_placeholder(partial + " …")

    async def _edit_placeholder(self, text: str) -> None:
        self._last_edit = self._clock()
        try:
            if self._placeholder_ts is None:
                self._placeholder_ts = await self._post(text)
            else:
                await self._client.chat_update(channel=self._t.channel, ts=self._placeholder_ts, text=text)
        except _SlackErrors as exc:
            log.info("progress message not updated", error=_error_of(exc))

    async def _finish_posts(self, markdown: str, extra_blocks: list[Block] | None) -> None:
        parts = split_message(to_mrkdwn(markdown))
        # A broken stream or the progress message is overwritten, so the thread holds one answer.
        reuse = self._stream.ts if self._stream is not None and self._stream.ts else self._placeholder_ts
        if reuse is None:
            await self._post_parts(parts, extra_blocks)
            return
        if len(parts) == 1:
            await self._write(reuse, parts[0], _with_text(parts[0], extra_blocks))
            if not extra_blocks or _with_text(parts[0], extra_blocks):
                return
            await self._post(_BUTTONS_FALLBACK, extra_blocks)
            return
        await self._write(reuse, parts[0], None)
        await self._post_parts(parts[1:], extra_blocks)

    async def _post_parts(self, parts: list[str], extra_blocks: list[Block] | None) -> None:
        for part in parts[:-1]:
            await self._post(part)
        last = parts[-1] if parts else ""
        blocks = _with_text(last, extra_blocks)
        if blocks or not extra_blocks:
            await self._post(last or _BUTTONS_FALLBACK, blocks)
            return
        await self._post(last)
        await self._post(_BUTTONS_FALLBACK, extra_blocks)

    async def _write(self, ts: str | None, text: str, blocks: list[Block] | None) -> None:
        if ts is None:
            await self._post(text, blocks)
            return
        await self._client.chat_update(channel=self._t.channel, ts=ts, text=text, blocks=blocks or [])

    async def _post(self, text: str, blocks: list[Block] | None = None) -> str:
        resp = await self._client.chat_postMessage(
            channel=self._t.channel, thread_ts=self._t.thread_ts, text=text, blocks=blocks,
            unfurl_links=False, unfurl_media=False,
        )
        ts = str(resp["ts"])
        self.posted.append(ts)
        return ts

    async def _cleanup(self) -> None:
        if not self._reacted:
            return
        try:
            await self._client.reactions_remove(channel=self._t.channel, timestamp=self._t.message_ts, name=REACTION)
        except _SlackErrors as exc:
            log.debug("reaction not removed", error=_error_of(exc))
        self._reacted = False


_BUTTONS_FALLBACK = "Use the buttons below."


def _with_text(text: str, extra_blocks: list[Block] | None) -> list[Block] | None:
    """Blocks for a message with buttons (Slack shows blocks instead of ``text``); None when there are
    no buttons or the text is too long for one section."""
    if not extra_blocks or len(text) > 2_900:
        return None
    return [section(text), *extra_blocks] if text else list(extra_blocks)


def _task_status(result: ExecuteResult) -> str:
    if isinstance(result, NeedsConnection | NeedsApproval):
        return "pending"
    return "complete" if result.ok else "error"


def _error_of(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", exc))
    return str(exc)
