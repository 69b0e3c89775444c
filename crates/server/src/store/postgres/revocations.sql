-- Certificates of deleted packs waiting to be revoked at their ACME CA (schema 6, as
-- SQLite's 7): written in the deletion's transaction, worked off under a lease.
CREATE TABLE revocations (
    id              BIGSERIAL PRIMARY KEY,
    pack_id         TEXT NOT NULL,
    zone_id         TEXT NOT NULL,
    ca              TEXT NOT NULL,
    serial          TEXT NOT NULL,
    chain_pem       TEXT NOT NULL,
    not_after       BIGINT NOT NULL,
    created_ms      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     BIGINT
);
CREATE INDEX revocations_due ON revocations(next_attempt_ms);
