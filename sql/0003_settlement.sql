-- ACH settlement and returns. A return is recorded once per attempt (the unique key makes a
-- replayed webhook or a re-imported return file a no-op), with its NACHA reason code and its
-- category, and whether it reversed money already counted as paid.

CREATE TABLE charge_returns (
    attempt_id      bigint PRIMARY KEY REFERENCES charge_attempts (id),
    return_code     text NOT NULL CHECK (return_code ~ '^R[0-9A-Z]{2}$'),
    category        text NOT NULL
                    CHECK (category IN ('nsf', 'administrative', 'unauthorized', 'other')),
    amount_cents    bigint NOT NULL CHECK (amount_cents > 0),
    reversed_paid   boolean NOT NULL,
    source          text NOT NULL CHECK (source IN ('poll', 'webhook', 'return_file')),
    as_of           date NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX charge_returns_received ON charge_returns (received_at);

-- Debits in flight, polled by the settlement job.
CREATE INDEX charge_attempts_processing ON charge_attempts (id) WHERE status = 'processing';

-- Gateway webhook events already applied: each is applied once, replays are ignored.
CREATE TABLE webhook_events (
    gateway      text NOT NULL,
    event_id     text NOT NULL,
    event_type   text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway, event_id)
);
