-- A room's counter follows its events: on SQLite an event is numbered and stored by one
-- statement (Tx::append_event), and this keeps `event_rooms.last_id` at the newest id. The
-- single writer holds the write lock for the whole batch, so nothing can number an event
-- of the room in between. `max` keeps the counter right if a row was numbered the other way
-- (upsert first), as PostgreSQL does.
CREATE TRIGGER events_bump_room AFTER INSERT ON events
BEGIN
    INSERT INTO event_rooms (room, last_id, pruned_through) VALUES (NEW.room, NEW.id, 0)
        ON CONFLICT (room) DO UPDATE SET last_id = max(event_rooms.last_id, excluded.last_id);
END;
