-- Nothing to do: the SQLite schema's 0015 adds a trigger that numbers a room's events in one
-- statement. PostgreSQL keeps numbering with the room's counter row first (Tx::append_event),
-- because that row lock is what orders concurrent transactions' events. Kept so that both
-- schemas' migrations stay numbered alike.
SELECT 1;
