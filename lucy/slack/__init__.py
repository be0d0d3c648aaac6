"""Lucy in Slack: Bolt's AsyncApp receives events, the agent answers in the thread.

Entry point: :func:`lucy.slack.app.build_slack` (imported lazily; importing ``lucy.slack`` itself
loads nothing heavy). Modules follow the data flow: ``listeners`` (ack → parse → delegate),
``dedupe`` (claim once in PostgreSQL), ``conversation`` (one turn), ``reply`` (feedback, streaming,
fallback, splitting), ``blocks`` / ``markdown`` (what Slack shows), ``connect`` (``/lucy-connect``
and the OAuth callback), ``installation_store`` (multi-workspace installs).
"""
