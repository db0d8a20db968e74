-- Usage records (chatgate::usage::PgSink): one row per request.
CREATE TABLE IF NOT EXISTS usage_records (
    id                BIGSERIAL PRIMARY KEY,
    request_id        TEXT,
    key_id            TEXT,
    model             TEXT,
    routed_model      TEXT,
    response_model    TEXT,
    upstream          TEXT,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    total_tokens      BIGINT NOT NULL,
    cached_tokens     BIGINT,
    reasoning_tokens  BIGINT,
    cost              DOUBLE PRECISION,
    status            INTEGER NOT NULL,
    streamed          BOOLEAN NOT NULL,
    ttft_ms           DOUBLE PRECISION,
    duration_ms       DOUBLE PRECISION NOT NULL,
    partial           BOOLEAN NOT NULL,
    estimated         BOOLEAN NOT NULL,
    usage_unknown     BOOLEAN NOT NULL,
    error             TEXT,
    finish_reasons    TEXT[] NOT NULL,
    started_at        TIMESTAMPTZ NOT NULL,
    ended_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_records_key_started ON usage_records (key_id, started_at);
