-- The same counter as SQLite's (see migrations/sqlite/0003_state_version.sql). Its one row is
-- updated last in each write transaction, so concurrent writers take turns only at their commit.
CREATE TABLE state_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO state_version (id, version) VALUES (1, 0);
