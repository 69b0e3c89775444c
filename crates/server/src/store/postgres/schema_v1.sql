-- zonecert's PostgreSQL schema, version 1 (the same tables as SQLite's schema.sql at its
-- version 2). Times are Unix seconds (BIGINT); JSON arrays are kept as text, as in SQLite.
CREATE TABLE zones (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL UNIQUE,
    key_hash   BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    secret_hash BYTEA PRIMARY KEY,      -- what every request looks a token up by
    id          TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    permissions TEXT NOT NULL,          -- JSON array of group names
    zones       TEXT,                   -- JSON array of zone ids; NULL = every zone
    created_at  BIGINT NOT NULL
);

CREATE TABLE packs (
    seq                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- listing order
    id                  TEXT NOT NULL UNIQUE,
    zone_id             TEXT NOT NULL REFERENCES zones(id) ON DELETE CASCADE,
    state               TEXT NOT NULL,
    method              TEXT NOT NULL,
    validity_days       BIGINT NOT NULL,
    ca                  TEXT NOT NULL,
    cloudflare_branding BOOLEAN NOT NULL,
    brand_check         BOOLEAN NOT NULL,
    errors              TEXT NOT NULL,      -- JSON array of strings
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    stage_deadline      BIGINT NOT NULL,
    cert_id             TEXT,
    cert_chain_pem      TEXT,
    cert_not_before     BIGINT,
    cert_not_after      BIGINT,
    cert_issuer         TEXT,
    cert_signature      TEXT,
    cert_issued_at      BIGINT,
    version             BIGINT NOT NULL,
    -- The lifecycle worker that owns the pack's current step, and until when (wall-clock
    -- Unix seconds). Not part of the pack's version: claiming never conflicts with edits.
    lease_owner         TEXT,
    lease_until         BIGINT
);
CREATE INDEX packs_by_zone ON packs(zone_id, seq);
CREATE INDEX packs_by_lease_owner ON packs(lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX packs_validation_deadline ON packs(stage_deadline)
    WHERE state = 'pending_validation';
CREATE INDEX packs_cert_expiry ON packs(cert_not_after) WHERE state = 'active';

CREATE TABLE pack_hosts (
    pack_id         TEXT NOT NULL REFERENCES packs(id) ON DELETE CASCADE,
    position        BIGINT NOT NULL,
    hostname        TEXT NOT NULL,
    record_kind     TEXT NOT NULL,     -- txt | http | cname | email
    record_name     TEXT NOT NULL,     -- TXT/CNAME name, HTTP URL, '' for email
    record_value    TEXT NOT NULL,     -- token, HTTP body, CNAME target, e-mails joined by ','
    verified        BOOLEAN,           -- NULL until checked
    last_checked_at BIGINT,
    reason          TEXT,
    attempts        BIGINT NOT NULL,
    next_due_at     BIGINT NOT NULL,
    PRIMARY KEY (pack_id, position)
);
CREATE INDEX pack_hosts_due ON pack_hosts(next_due_at);
