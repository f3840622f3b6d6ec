-- Where imported rows came from (issue 15), so importing the same file again adds nothing:
-- one row per imported comment (kind 'comment') or audit entry (kind 'audit'), keyed by the
-- source ("disqus", "wordpress:SITE", "moderato:INSTANCE", ...) and the source's own id.
CREATE TABLE import_sources (
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    source_id TEXT NOT NULL,
    target_id BIGINT NOT NULL,
    PRIMARY KEY (source, kind, source_id)
);

-- The page a thread belongs to, as the source knew it (kept by imports and exports).
ALTER TABLE threads ADD COLUMN url TEXT;
