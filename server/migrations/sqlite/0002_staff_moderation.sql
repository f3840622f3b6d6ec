-- Staff accounts, API keys, server-side sessions and the audit log of moderation.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    -- argon2id, PHC string format.
    password_hash TEXT NOT NULL,
    is_staff BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    -- SHA-256 of the key: keys are long random strings, so a fast hash is enough.
    key_hash TEXT NOT NULL UNIQUE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);

-- tower-sessions records, as JSON.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Every moderation decision: staff actions (actor = user name) and moderator rejections
-- (actor = "moderator:NAME", comment_id NULL since nothing was stored).
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    comment_id BIGINT REFERENCES comments (id) ON DELETE SET NULL,
    thread_id BIGINT REFERENCES threads (id) ON DELETE SET NULL,
    status_before TEXT,
    status_after TEXT,
    detail TEXT
);

CREATE INDEX audit_log_at ON audit_log (at);
-- The moderation queue: newest first per status.
CREATE INDEX comments_status_created ON comments (status, created_at);
-- "First comment" pre-moderation looks commenters up by email, else by name.
CREATE INDEX comments_author_email ON comments (author_email);
CREATE INDEX comments_author_name ON comments (author_name);
