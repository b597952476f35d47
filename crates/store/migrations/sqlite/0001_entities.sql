-- Every entity is a JSON document under (kind, key). IAM state is small (thousands of rows), read
-- once at start into memory, and written one entity at a time; a document table keeps the SQLite
-- and PostgreSQL schemas identical and makes new fields a code change, not a migration.
CREATE TABLE entities (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
