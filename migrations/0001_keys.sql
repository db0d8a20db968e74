-- chatgate API keys (feature `postgres`). Applied by `PgKeyStore::migrate()`, which runs it
-- idempotently under an advisory lock; safe to run by hand as well. When a schema is
-- configured, `chatgate_keys` is qualified with it.
CREATE TABLE IF NOT EXISTS chatgate_keys (
    id             text        PRIMARY KEY CHECK (id <> ''),
    -- SHA-256 of the secret; the secret itself is never stored.
    sha256         bytea       NOT NULL UNIQUE CHECK (octet_length(sha256) = 32),
    -- Glob patterns of the models the key may use; empty: every model.
    models         text[]      NOT NULL DEFAULT '{}',
    rpm            integer     CHECK (rpm > 0),
    tpm            bigint      CHECK (tpm > 0),
    max_concurrent integer     CHECK (max_concurrent > 0),
    -- [{"model": "qwen*", "rpm": 60, "tpm": null, "max_concurrent": null}, ...]
    model_limits   jsonb       NOT NULL DEFAULT '[]',
    expires_at     timestamptz,
    disabled       boolean     NOT NULL DEFAULT false,
    -- {"team": "a", "user": "bob"}: string values
    metadata       jsonb       NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now()
);
