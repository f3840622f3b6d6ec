-- Per-client rate limits shared by every instance on this database (server/src/engine/cluster.rs):
-- for each limit and client, GCRA's theoretical arrival time in Unix ms. A row whose time has
-- passed says nothing more than a missing one, so housekeeping deletes those.
CREATE TABLE rate_limits (
    scope TEXT NOT NULL,
    client TEXT NOT NULL,
    tat BIGINT NOT NULL,
    PRIMARY KEY (scope, client)
);
