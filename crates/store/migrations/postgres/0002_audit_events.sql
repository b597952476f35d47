-- The same audit table as SQLite's (see migrations/sqlite/0002_audit_events.sql).
CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    replica TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    role TEXT,
    role_name TEXT,
    subject TEXT,
    data TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time_ms);
CREATE INDEX audit_events_role ON audit_events (role_name, time_ms);
