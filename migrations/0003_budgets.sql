-- chatgate key budgets (feature `postgres`): tokens and money a key may spend per period.
-- Applied by `PgKeyStore::migrate()` after 0001_keys.sql, idempotently; safe to run by hand.
-- When a schema is configured, `chatgate_keys` is qualified with it. NULL: no budget.
-- The running spend is not stored here: it lives in the limiter's backend (see the
-- rate_limit module docs, "Budgets").
ALTER TABLE chatgate_keys
    -- Tokens (prompt + completion) per period.
    ADD COLUMN IF NOT EXISTS budget_tokens    bigint CHECK (budget_tokens > 0),
    -- Micro-dollars (1 USD = 1 000 000) per period, at the gateway's [[prices]].
    ADD COLUMN IF NOT EXISTS budget_micro_usd bigint CHECK (budget_micro_usd > 0),
    -- 'day', 'week', 'month' (UTC calendar) or a duration such as '30d'; NULL: 'month'.
    ADD COLUMN IF NOT EXISTS budget_period    text;
