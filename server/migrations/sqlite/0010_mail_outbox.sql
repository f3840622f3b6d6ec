-- Mail waiting to be sent, written in the same transaction as the change that causes it,
-- so a mail server that is down, or a restart, loses nothing; one background worker sends
-- it, with retries further apart each time, and marks each row once it is sent (or why it
-- was given up).
CREATE TABLE mail_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- Not before this time (Unix ms): a retry's wait, or a sender's claim on it.
    next_attempt_at BIGINT NOT NULL,
    sent_at BIGINT,
    -- Why it will not be sent: a rate limit, or too many failed tries.
    dropped TEXT,
    last_error TEXT
);

CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at)
    WHERE sent_at IS NULL AND dropped IS NULL;
CREATE INDEX mail_outbox_sent ON mail_outbox (recipient, sent_at) WHERE sent_at IS NOT NULL;
