-- People Lucy has greeted in its Messages tab (one greeting per person per workspace).
CREATE TABLE slack_greetings (
    workspace_id  text NOT NULL,
    slack_user    text NOT NULL,
    greeted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, slack_user)
);
