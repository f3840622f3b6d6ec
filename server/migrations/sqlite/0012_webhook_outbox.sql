-- Webhook deliveries waiting to be made, written in the same transaction as the comment or
-- the staff decision that causes them, so a receiver that is down, or a restart, loses
-- nothing; one background worker POSTs each (the body is stored exactly as it is signed and
-- sent, so every retry sends the same bytes), retries further apart each time, and marks
-- each row once it is delivered (or why it was given up). No secret is stored: the
-- receiver's secret is looked up by url in the configuration at send time.
CREATE TABLE webhook_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    comment_id BIGINT,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- Not before this time (Unix ms): a retry's wait, or a sender's claim on it.
    next_attempt_at BIGINT NOT NULL,
    delivered_at BIGINT,
    -- Why it will not be delivered: too many failed tries, or the webhook is gone.
    dropped TEXT,
    last_error TEXT
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND dropped IS NULL;
