-- Certificates of deleted packs waiting to be revoked at their ACME CA (schema 7):
-- written in the deletion's transaction, worked off by the lifecycle under a lease.
CREATE TABLE IF NOT EXISTS revocations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    pack_id         TEXT NOT NULL,
    zone_id         TEXT NOT NULL,
    ca              TEXT NOT NULL,
    serial          TEXT NOT NULL,
    chain_pem       TEXT NOT NULL,
    not_after       INTEGER NOT NULL,      -- Unix seconds
    created_ms      INTEGER NOT NULL,      -- Unix milliseconds, wall clock
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     INTEGER                -- Unix milliseconds, wall clock
);
CREATE INDEX IF NOT EXISTS revocations_due ON revocations(next_attempt_ms);
