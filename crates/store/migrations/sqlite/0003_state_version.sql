-- One counter for the whole state, bumped once by every write transaction. A process that knows
-- the version its in-memory state corresponds to can tell its own write (the version it got back
-- from the commit) from another writer's, without comparing the state.
CREATE TABLE state_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO state_version (id, version) VALUES (1, 0);
