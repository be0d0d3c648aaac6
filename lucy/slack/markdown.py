"""Markdown (what the LLM writes) → Slack mrkdwn (what ``text`` fields render), and message splitting.

Streamed replies (``chat.*Stream`` ``markdown_text``) take Markdown as is; everything posted with
``chat.postMessage``/``chat.update`` goes through :func:`to_mrkdwn`. Slack treats ``&``, ``<`` and
``>`` as control characters, so they are escaped everywhere except in Slack's own tokens the model
may have written on purpose (``<@U123>``, ``<#C123>``, ``<!here>``, ``<https://x|label>``).
"""

from __future__ import annotations

import re

# Slack's guidance is ≤ 4,000 characters per message for readable, never-truncated posts.
MESSAGE_LIMIT = 3_900

_FENCE = re.compile(r"^\s*(```|~~~)")
_SLACK_TOKEN = re.compile(r"<(?:[@#!][^<>\s]+|(?:https?|mailto):[^<>\s]+)>")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^<>\s|]+)>")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_TASK = re.compile(r"^\[( |x|X)\]\s+")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def escape(text: str) -> str:
    """Escape Slack's control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Convert the model's Markdown to Slack mrkdwn: links, bold, italics, lists, headings, code, tables."""
    out: list[str] = []
    lines = markdown.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            block, i = _take_fence(lines, i)
            out.append(block)
            continue
        if _TABLE_ROW.match(line) and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]):
            block, i = _take_table(lines, i)
            out.append(block)
            continue
        out.append(_convert_line(line))
        i += 1
    return "\n".join(out)


def _take_fence(lines: list[str], start: int) -> tuple[str, int]:
    # Slack ignores the language tag and renders no formatting inside ``` blocks.
    marker = _FENCE.match(lines[start])
    assert marker is not None
    fence = marker.group(1)
    body: list[str] = []
    i = start + 1
    while i < len(lines) and not lines[i].strip().startswith(fence):
        body.append(escape(lines[i]))
        i += 1
    return "```\n" + "\n".join(body) + "\n```", i + 1


def _take_table(lines: list[str], start: int) -> tuple[str, int]:
    # Slack has no tables: a monospace block keeps the columns lined up.
    rows: list[list[str]] = []
    i = start
    while i < len(lines) and _TABLE_ROW.match(lines[i]):
        if not _TABLE_RULE.match(lines[i]):
            rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
        i += 1
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    sizes = [max(len(r[c]) for r in rows) for c in range(width)]
    rendered = ["  ".join(cell.ljust(sizes[c]) for c, cell in enumerate(r)).rstrip() for r in rows]
    return "```\n" + "\n".join(escape(r) for r in rendered) + "\n```", i


def _convert_line(line: str) -> str:
    if _RULE.match(line):
        return "──────────"
    heading = _HEADING.match(line)
    if heading:
        return f"*{_inline(heading.group(1)).strip('*')}*"
    bullet = _BULLET.match(line)
    if bullet:
        indent, rest = bullet.groups()
        depth = len(indent.replace("\t", "    ")) // 2
        task = _TASK.match(rest)
        if task:
            rest = ("☑ " if task.group(1) in "xX" else "☐ ") + rest[task.end():]
        return "    " * depth + ("•" if depth % 2 == 0 else "◦") + " " + _inline(rest)
    if line.lstrip().startswith(">"):
        stripped = line.lstrip()[1:].lstrip()
        return "> " + _inline(stripped)
    return _inline(line)


def _inline(text: str) -> str:
    """Convert inline Markdown; inline code and Slack tokens pass through untouched."""
    protected: list[str] = []

    def keep(value: str) -> str:
        protected.append(value)
        return f"\x00{len(protected) - 1}\x00"

    text = _INLINE_CODE.sub(lambda m: keep(escape(m.group(0))), text)
    text = _SLACK_TOKEN.sub(lambda m: keep(m.group(0)), text)
    text = _IMAGE.sub(lambda m: keep(_link(m.group(2), m.group(1) or m.group(2))), text)
    text = _LINK.sub(lambda m: keep(_link(m.group(2), m.group(1))), text)
    text = _AUTOLINK.sub(lambda m: keep(f"<{m.group(1)}>"), text)
    text = escape(text)
    text = _BOLD.sub(lambda m: keep("*" + m.group(2) + "*"), text)
    text = _ITALIC_STAR.sub(lambda m: "_" + m.group(1) + "_", text)
    text = _STRIKE.sub(lambda m: "~" + m.group(1) + "~", text)
    while "\x00" in text:
        text = re.sub(r"\x00(\d+)\x00", lambda m: protected[int(m.group(1))], text)
    return text


def _link(url: str, label: str) -> str:
    label = _inline(label).replace("|", "¦")
    # Inline formatting inside a link label is kept (Slack renders *bold* there too).
    return f"<{url.replace('>', '%3E').replace('|', '%7C')}|{label}>" if label != url else f"<{url}>"


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split text into pieces of at most ``limit`` characters, at paragraph, then line, then word
    boundaries; a code block cut in two is closed and reopened so both halves render as code."""
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = cut_point(rest, limit - 4)  # room to close a ``` fence
        head, rest = rest[:cut].rstrip("\n"), rest[cut:].lstrip("\n")
        if head.count("```") % 2 == 1:
            head += "\n```"
            rest = "```\n" + rest
        pieces.append(head)
    if rest.strip():
        pieces.append(rest)
    return pieces


def cut_point(text: str, limit: int) -> int:
    """Where to cut ``text`` to keep at most ``limit`` characters: after a paragraph, a line or a word."""
    if len(text) <= limit:
        return len(text)
    window = text[:limit]
    for sep in ("\n\n", "\n", " "):
        at = window.rfind(sep)
        if at > limit // 3:
            return at + len(sep)
    return limit
