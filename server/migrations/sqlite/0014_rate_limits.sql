-- The table PostgreSQL's shared rate limits use (server/src/engine/cluster.rs). A single SQLite
-- process keeps its limits in memory and never writes here; the table exists so that both
-- schemas stay alike.
CREATE TABLE rate_limits (
    scope TEXT NOT NULL,
    client TEXT NOT NULL,
    tat BIGINT NOT NULL,
    PRIMARY KEY (scope, client)
);
