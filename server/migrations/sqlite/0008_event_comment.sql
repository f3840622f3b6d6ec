-- Which comment a thread event is about, so that when a comment leaves `published` the
-- reader and author payloads of its earlier events can be blanked: a catch-up replay must
-- never hand readers what staff removed.
ALTER TABLE events ADD COLUMN comment_id BIGINT;
CREATE INDEX events_comment ON events (comment_id) WHERE comment_id IS NOT NULL;
