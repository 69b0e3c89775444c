-- Webhooks (schema 3, as SQLite's 4): the outbox of events, written in the transaction
-- of the transition that caused them; the endpoints; one delivery per event and endpoint.
CREATE TABLE webhook_events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    zone_id     TEXT NOT NULL,
    pack_id     TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    payload     TEXT NOT NULL,
    dedupe      TEXT UNIQUE
);
CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    zone_id     TEXT,
    events      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    allow_private BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE webhook_deliveries (
    event_seq       BIGINT NOT NULL REFERENCES webhook_events(seq) ON DELETE CASCADE,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    pack_id         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    created_ms      BIGINT NOT NULL,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    PRIMARY KEY (event_seq, endpoint_id)
);
CREATE INDEX webhook_deliveries_pending
    ON webhook_deliveries(endpoint_id, event_seq) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_pending_pack
    ON webhook_deliveries(endpoint_id, pack_id, event_seq) WHERE state = 'pending';
