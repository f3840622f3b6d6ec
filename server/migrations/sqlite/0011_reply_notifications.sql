-- Reply notifications. A commenter who gives an email and asks ("notify me of replies") is
-- mailed when a reply to that comment is published, once the address is confirmed (double
-- opt-in: the first ask sends only a confirmation mail). Unsubscribing is per thread or
-- from everything; mail carries a one-click List-Unsubscribe address.
ALTER TABLE comments ADD COLUMN notify_replies BIGINT NOT NULL DEFAULT 0;

CREATE TABLE subscribers (
    -- Lower case.
    email TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    confirmed_at BIGINT,
    -- Unsubscribed from everything: no mail until the address asks and confirms again.
    unsubscribed_at BIGINT
);

CREATE TABLE thread_unsubscribes (
    email TEXT NOT NULL,
    thread_id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (email, thread_id)
);

-- The one-click unsubscribe address a mail carries (RFC 8058), if any.
ALTER TABLE mail_outbox ADD COLUMN list_unsubscribe TEXT;
