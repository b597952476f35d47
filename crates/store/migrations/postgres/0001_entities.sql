-- The same document table as SQLite's (see migrations/sqlite/0001_entities.sql).
CREATE TABLE entities (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);
