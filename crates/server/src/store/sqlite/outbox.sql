-- Webhooks (schema 4): the outbox of events, written in the transaction of the
-- transition that caused them; the endpoints; one delivery per event and endpoint.
CREATE TABLE IF NOT EXISTS webhook_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,      -- webhook-id (msg_...)
    kind        TEXT NOT NULL,             -- pack.issued, ...
    zone_id     TEXT NOT NULL,
    pack_id     TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,          -- Unix seconds, the lifecycle's clock
    payload     TEXT NOT NULL,             -- the JSON body, as delivered
    dedupe      TEXT UNIQUE                -- an event written at most once (pack.expiring)
);
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    zone_id     TEXT,                      -- NULL: every zone
    events      TEXT NOT NULL,             -- types joined by ','; '': every type
    secret      TEXT NOT NULL,             -- whsec_...: signing needs it in clear
    created_at  INTEGER NOT NULL,
    allow_private INTEGER NOT NULL DEFAULT 0  -- loopback and private addresses allowed
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    event_seq       INTEGER NOT NULL REFERENCES webhook_events(seq) ON DELETE CASCADE,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    pack_id         TEXT NOT NULL,
    state           TEXT NOT NULL,         -- pending | delivered | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,      -- Unix milliseconds, wall clock
    created_ms      INTEGER NOT NULL,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     INTEGER,               -- Unix milliseconds, wall clock
    PRIMARY KEY (event_seq, endpoint_id)
);
-- The claim: an endpoint's pending deliveries in order, and the older pending delivery
-- of the same pack that holds a newer one back.
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending
    ON webhook_deliveries(endpoint_id, event_seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending_pack
    ON webhook_deliveries(endpoint_id, pack_id, event_seq) WHERE state = 'pending';
