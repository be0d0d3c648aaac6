"""The ``lucy`` command. Subcommands import what they need only when they run, so
``lucy --help`` stays instant and offline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lucy", description="Lucy: a Slack agent that acts in your connected apps."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="run the bot (applies pending migrations first)")
    sub.add_parser("migrate", help="apply pending database migrations")
    sub.add_parser("doctor", help="check every setting and dependency, and say how to fix what is wrong")
    chat = sub.add_parser("chat", help="talk to the agent loop in the terminal, no Slack needed")
    chat.add_argument("--workspace", default="T_LOCAL", help="workspace id whose apps to use (default T_LOCAL)")
    chat.add_argument("--user", default="U_LOCAL", help="Slack user id to act as (default U_LOCAL)")

    tools = sub.add_parser("tools", help="tool catalog utilities")
    tools_sub = tools.add_subparsers(dest="tools_command", metavar="TOOLS_COMMAND")
    rank = tools_sub.add_parser("rank", help="offline tool selection over a catalog (JSONL in, JSONL out)")
    rank.add_argument("--catalog", required=True, help="a JSON file or a directory of JSON tool lists")
    rank.add_argument("--queries", required=True, help="JSONL file of {id, text, connected}")
    rank.add_argument("-k", type=int, default=10, help="how many ranked slugs to print (default 10)")
    rank.add_argument("--phrasebooks", action="append", default=[], metavar="DIR",
                      help="also read tool phrasebooks from DIR (repeatable; after the shipped and data-dir ones)")
    book = tools_sub.add_parser("phrasebook", help="write each tool's everyday requests with the configured model")
    book.add_argument("--catalog", help="a JSON file or a directory of JSON tool lists (default: ask Composio)")
    book.add_argument("--toolkit", action="append", default=[], help="only this toolkit (repeatable)")
    book.add_argument("--out", help="where to write <toolkit>.json (default $LUCY_DATA_DIR/phrasebooks)")

    audit = sub.add_parser("audit", help="print the audit log of a workspace")
    audit.add_argument("--workspace", required=True, help="workspace id (T…)")
    audit.add_argument("--since", default="1d", help="how far back: 30m, 12h, 1d, 7d (default 1d)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "tools" and args.tools_command == "rank":
        # Offline and light: must not import litellm or composio.
        from lucy.integrations.rank_cli import run_rank

        return run_rank(args.catalog, args.queries, args.k, args.phrasebooks)
    if args.command == "tools" and args.tools_command != "phrasebook":
        parser.parse_args(["tools", "--help"])
        return 2
    return _run_with_settings(args)


def _run_with_settings(args: argparse.Namespace) -> int:
    from lucy.errors import LucyError

    try:
        return _dispatch(args)
    except LucyError as exc:
        print(f"lucy: {exc.user_message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        from lucy.doctor import run_doctor

        return run_doctor()
    from lucy.config import load_settings
    from lucy.log import add_secrets, configure

    settings = load_settings()
    configure(settings.log_level, settings.resolved_log_format)
    add_secrets(settings.secrets())
    if args.command == "serve":
        from lucy.serve import run_serve

        return run_serve(settings)
    if args.command == "migrate":
        from lucy.serve import run_migrate

        return run_migrate(settings)
    if args.command == "chat":
        from lucy.chat import run_chat

        return run_chat(settings, workspace=args.workspace, user=args.user)
    if args.command == "tools":
        from lucy.integrations.phrasebook_cli import run_phrasebook

        return run_phrasebook(settings, args.catalog, args.toolkit, args.out)
    if args.command == "audit":
        from lucy.audit_cli import run_audit

        return run_audit(settings, workspace=args.workspace, since=args.since)
    raise AssertionError(args.command)
