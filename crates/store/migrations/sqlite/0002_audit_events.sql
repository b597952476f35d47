-- The audit trail of every server writing to this database, append-only. `data` is the whole
-- event as JSON (the line `audit.log` has); the other columns are what `podiam audit` filters
-- on. `role_name` is the last path segment of `role`, so a role is found by name or by ARN.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
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
