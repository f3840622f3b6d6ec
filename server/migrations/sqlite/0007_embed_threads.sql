-- Threads an embed created on first use (issue 11): the page they were made for and the
-- allowed origin that framed it, so staff can tell where a thread lives.
CREATE TABLE embed_threads (
    thread_id BIGINT PRIMARY KEY REFERENCES threads (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    origin TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
