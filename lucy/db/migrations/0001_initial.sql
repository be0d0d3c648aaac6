-- First schema. One row set per Slack workspace (team, or enterprise:team on Grid); every table
-- that holds workspace data has workspace_id first in its key so no query can mix two workspaces.

CREATE TABLE workspaces (
    id              text PRIMARY KEY,            -- 'T…' or 'E…:T…'
    team_id         text,
    enterprise_id   text,
    name            text,
    installed_at    timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    uninstalled_at  timestamptz
);

-- Slack installations (multi-workspace OAuth). `data` keeps the whole slack_sdk Installation so
-- nothing is lost when Slack adds fields; the columns are what we query by.
CREATE TABLE slack_installations (
    id                      bigserial PRIMARY KEY,
    workspace_id            text NOT NULL,
    client_id               text,
    enterprise_id           text,
    team_id                 text,
    user_id                 text,
    is_enterprise_install   boolean NOT NULL DEFAULT false,
    bot_token               text,
    bot_id                  text,
    bot_user_id             text,
    data                    jsonb NOT NULL,
    installed_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX slack_installations_lookup ON slack_installations (workspace_id, installed_at DESC);

CREATE TABLE slack_oauth_states (
    state       text PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);

CREATE TABLE integrations (
    workspace_id          text NOT NULL,
    toolkit               text NOT NULL,
    connected_account_id  text,
    status                text NOT NULL CHECK (status IN ('active', 'inactive')),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, toolkit)
);

-- Exactly-once: an event id, and a (workspace, channel, ts) message, are claimed before acting.
CREATE TABLE processed_events (
    event_id      text PRIMARY KEY,
    workspace_id  text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE processed_messages (
    workspace_id  text NOT NULL,
    channel       text NOT NULL,
    ts            text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, channel, ts)
);

-- Thread memory: every message Lucy sees or writes, in OpenAI chat format.
CREATE TABLE thread_messages (
    id            bigserial PRIMARY KEY,
    workspace_id  text NOT NULL,
    channel       text NOT NULL,
    thread_ts     text NOT NULL,
    slack_user    text,
    message       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX thread_messages_thread ON thread_messages (workspace_id, channel, thread_ts, id);

-- Actions waiting for a person: approvals, and requests waiting for a connection.
CREATE TABLE pending_actions (
    id            text PRIMARY KEY,
    workspace_id  text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('approval', 'connection')),
    channel       text NOT NULL,
    thread_ts     text NOT NULL,
    slack_user    text NOT NULL,
    tool          text,
    toolkit       text,
    arguments     jsonb,
    state         jsonb,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'done', 'failed')),
    decided_by    text,
    decided_at    timestamptz,
    expires_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_actions_open ON pending_actions (workspace_id, status, expires_at);

CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    workspace_id  text NOT NULL,
    slack_user    text,
    tool          text NOT NULL,
    arguments     jsonb,
    status        text NOT NULL,   -- executed | failed | denied | expired | needs_connection | invalid | timeout
    decision      text,            -- auto | approved | denied | expired
    decided_by    text,
    error         text,
    duration_ms   double precision,
    turn_id       text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_workspace_time ON audit_log (workspace_id, created_at DESC);
CREATE INDEX audit_log_time ON audit_log (created_at);
