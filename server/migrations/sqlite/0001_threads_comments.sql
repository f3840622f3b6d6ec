-- Threads and their comments. Times are Unix milliseconds (UTC); booleans are 0/1, so the
-- same queries read both backends through sqlx's Any driver.
CREATE TABLE threads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'page',
    title TEXT NOT NULL DEFAULT '',
    comments_enabled BIGINT NOT NULL DEFAULT 1,
    published_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id BIGINT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    parent_id BIGINT REFERENCES comments (id),
    depth BIGINT NOT NULL,
    -- Materialised path: the zero-padded ids from the root down to this comment. Sorting by
    -- it gives depth-first, oldest-first order, and a subtree is one contiguous range.
    path TEXT NOT NULL,
    author_name TEXT NOT NULL,
    author_email TEXT,
    author_url TEXT,
    title TEXT,
    body_source TEXT NOT NULL,
    body_html TEXT NOT NULL,
    status TEXT NOT NULL,
    moderator TEXT,
    reason TEXT,
    score DOUBLE PRECISION,
    ip TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Readers' pages: published comments of a thread in tree order, one range scan.
CREATE INDEX comments_thread_status_path ON comments (thread_id, status, path);
-- Staff pages: every comment of a thread in tree order.
CREATE INDEX comments_thread_path ON comments (thread_id, path);

-- Spent form tokens, so each is accepted once; rows past expires_at can be purged.
CREATE TABLE form_nonces (
    nonce TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- Server-wide values created at first start (e.g. the form-signing secret).
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
