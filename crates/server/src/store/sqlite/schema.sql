-- zonecert's SQLite schema, version 1. Times are Unix seconds.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Tables looked up by a text key on every request are WITHOUT ROWID: the row lives in
-- the key's B-tree, so a lookup is one search instead of an index search and a row fetch.
CREATE TABLE IF NOT EXISTS zones (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS users (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL UNIQUE,
    key_hash   BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS tokens (
    secret_hash BLOB PRIMARY KEY,       -- what every request looks a token up by
    id          TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    permissions TEXT NOT NULL,          -- JSON array of group names
    zones       TEXT,                   -- JSON array of zone ids; NULL = every zone
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS packs (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,  -- listing order
    id                  TEXT NOT NULL UNIQUE,
    zone_id             TEXT NOT NULL REFERENCES zones(id) ON DELETE CASCADE,
    state               TEXT NOT NULL,
    method              TEXT NOT NULL,
    validity_days       INTEGER NOT NULL,
    ca                  TEXT NOT NULL,
    cloudflare_branding INTEGER NOT NULL,
    brand_check         INTEGER NOT NULL,
    errors              TEXT NOT NULL,      -- JSON array of strings
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    -- When the pack's current stage times out: validation (the CA's token lifetime),
    -- then issuance and deployment together (the configured issuance timeout).
    stage_deadline      INTEGER NOT NULL,
    cert_id             TEXT,
    cert_chain_pem      TEXT,
    cert_not_before     INTEGER,
    cert_not_after      INTEGER,
    cert_issuer         TEXT,
    cert_signature      TEXT,
    cert_issued_at      INTEGER,
    version             INTEGER NOT NULL,
    -- The order placed with an ACME CA (its URL and challenges, JSON): a restarted or
    -- another server resumes it. NULL for the built-in CA.
    order_ref           TEXT,
    -- When the certificate's CA suggests renewing it (ACME Renewal Information, RFC 9773).
    cert_renew_at       INTEGER,
    -- The ACME directory that ordered the certificate (NULL: the built-in CA's), schema 9.
    cert_acme_directory TEXT,
    -- The lifecycle worker that owns the pack's current step, and until when (wall-clock
    -- Unix seconds). Not part of the pack's version: claiming never conflicts with edits.
    lease_owner         TEXT,
    lease_until         INTEGER
);
CREATE INDEX IF NOT EXISTS packs_by_zone ON packs(zone_id, seq);
-- A worker renews its leases with one UPDATE by owner: this finds the packs in hand
-- without scanning every pack (most packs are not leased, so the index stays small).
CREATE INDEX IF NOT EXISTS packs_by_lease_owner ON packs(lease_owner)
    WHERE lease_owner IS NOT NULL;

CREATE TABLE IF NOT EXISTS pack_hosts (
    pack_id         TEXT NOT NULL REFERENCES packs(id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    hostname        TEXT NOT NULL,
    record_kind     TEXT NOT NULL,     -- txt | http | cname | email
    record_name     TEXT NOT NULL,     -- TXT/CNAME name, HTTP URL, '' for email
    record_value    TEXT NOT NULL,     -- token, HTTP body, CNAME target, e-mails joined by ','
    verified        INTEGER,           -- NULL until checked
    last_checked_at INTEGER,
    reason          TEXT,
    attempts        INTEGER NOT NULL,
    next_due_at     INTEGER NOT NULL,
    PRIMARY KEY (pack_id, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pack_hosts_due ON pack_hosts(next_due_at);
-- The lifecycle's claim finds packs past their validation deadline or their certificate's
-- expiry through these instead of scanning every pack.
CREATE INDEX IF NOT EXISTS packs_validation_deadline ON packs(stage_deadline)
    WHERE state = 'pending_validation';
CREATE INDEX IF NOT EXISTS packs_cert_expiry ON packs(cert_not_after) WHERE state = 'active';

-- Certificates' private keys, sealed under the key-encryption key (keys.rs).
CREATE TABLE IF NOT EXISTS certificate_keys (
    pack_id TEXT PRIMARY KEY REFERENCES packs(id) ON DELETE CASCADE,
    serial  TEXT NOT NULL,
    sealed  BLOB NOT NULL
);
