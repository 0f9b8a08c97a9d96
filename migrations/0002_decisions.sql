-- model-router store, version 2: decision records and feedback history, shared by replicas.

-- Every routing decision as the decision log writes it (one JSON record), written by the
-- replica that made it in batches, off the request path. Feedback sent to any replica finds
-- its decision here; `store export-decisions` writes them out for replay and label-queue.
-- Rows older than `store.decisions_keep_days` are deleted.
CREATE TABLE router_decisions (
    id       TEXT PRIMARY KEY,
    at       TIMESTAMPTZ NOT NULL,
    replica  TEXT NOT NULL,
    tier     TEXT NOT NULL,
    record   JSONB NOT NULL
);
CREATE INDEX router_decisions_at ON router_decisions (at);

-- Every piece of feedback accepted, as sent, with what it did; written in the transaction
-- that writes the example it became (or merged into), so the two never disagree.
CREATE TABLE router_feedback (
    n           BIGSERIAL PRIMARY KEY,
    decision_id TEXT NOT NULL,
    example_id  TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    replica     TEXT NOT NULL,
    -- the request body
    feedback    JSONB NOT NULL,
    -- added, merged or unchanged
    result      TEXT NOT NULL,
    -- the example's label after it
    label       JSONB NOT NULL
);
CREATE INDEX router_feedback_decision ON router_feedback (decision_id);
