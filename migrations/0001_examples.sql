-- model-router store, version 1: the examples every replica routes with, and their vectors.

-- Every write takes the next number: replicas apply rows in this order, once each, and catch up
-- after a gap by asking for the rows past the last number they applied.
CREATE SEQUENCE router_example_seq;

CREATE TABLE router_examples (
    id          TEXT PRIMARY KEY,
    -- Unique and increasing in commit order (writers hold an advisory lock from taking the
    -- number to the commit); an update takes a new number, so it reaches every replica too.
    seq         BIGINT NOT NULL UNIQUE,
    text        TEXT NOT NULL,
    -- {"tier": "small"} or {"outcomes": {"small": 0.2, "large": 1.0}}
    label       JSONB NOT NULL,
    category    TEXT,
    meta        JSONB,
    text_sha256 BYTEA NOT NULL,
    added_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A model's embedding of a text, so a new replica loads vectors instead of embedding again.
CREATE TABLE router_vectors (
    model_sha256 TEXT NOT NULL,
    text_sha256  BYTEA NOT NULL,
    dim          INTEGER NOT NULL,
    -- dim little-endian f32 values
    vector       BYTEA NOT NULL,
    PRIMARY KEY (model_sha256, text_sha256)
);
