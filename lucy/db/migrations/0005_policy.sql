-- Approval policy overrides, and what approvals need beyond 0001's pending_actions.

-- Per-workspace overrides an admin sets with /lucy-policy. A tool override beats a toolkit one.
--   scope 'toolkit': target is a toolkit slug in lower case ('github')
--   scope 'tool':    target is a tool slug in upper case ('GITHUB_DELETE_A_REPOSITORY')
--   rule  'ask' = always ask, 'auto' = run without asking, 'deny' = never run
CREATE TABLE policy_overrides (
    workspace_id  text NOT NULL,
    scope         text NOT NULL CHECK (scope IN ('toolkit', 'tool')),
    target        text NOT NULL,
    rule          text NOT NULL CHECK (rule IN ('ask', 'auto', 'deny')),
    set_by        text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, scope, target)
);

-- Approvals: why we ask (shown in the message), the tool's risk, the Slack message to update
-- when someone decides or the request expires, the turn it belongs to, and when the approved
-- action finished. IF NOT EXISTS: another migration may add the same column first.
ALTER TABLE pending_actions ADD COLUMN IF NOT EXISTS reason text;
ALTER TABLE pending_actions ADD COLUMN IF NOT EXISTS risk text;
ALTER TABLE pending_actions ADD COLUMN IF NOT EXISTS message_ts text;
ALTER TABLE pending_actions ADD COLUMN IF NOT EXISTS turn_id text;
ALTER TABLE pending_actions ADD COLUMN IF NOT EXISTS finished_at timestamptz;

-- The expiry sweep looks across workspaces for pending rows that are due.
CREATE INDEX IF NOT EXISTS pending_actions_due ON pending_actions (expires_at) WHERE status = 'pending';

-- An audit row of an approved (or denied, or expired) action points at its approval.
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS approval_id text;
