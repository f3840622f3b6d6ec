-- Comments per status, kept in the same transaction as every insert and status change, so
-- the live stats_update event costs one small read instead of a scan of all comments.
CREATE TABLE comment_counts (
    status TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);

INSERT INTO comment_counts (status, n)
SELECT status, COUNT(*) FROM comments GROUP BY status;
