-- Live events, written in the same transaction as the change that caused them, so a
-- client that reconnects with the last id it saw can replay exactly what it missed.
-- Ids count up per room (a thread key, or "moderation"); event_rooms holds each room's
-- counter, whose row lock also makes ids follow commit order on PostgreSQL.
CREATE TABLE event_rooms (
    room TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL,
    -- Events up to this id were pruned: older cursors get "reset".
    pruned_through BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE events (
    room TEXT NOT NULL,
    id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    reader TEXT,
    staff TEXT NOT NULL,
    author_token TEXT,
    author TEXT,
    PRIMARY KEY (room, id)
);

CREATE INDEX events_created_at ON events (created_at);
