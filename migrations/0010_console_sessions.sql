-- Console sessions: a staff API token exchanged for a short-lived session cookie. Only hashes are
-- stored: the session secret's, and the token's (checked on every request, so revoking the token
-- ends its sessions at once).
CREATE TABLE console_sessions (
    id_hash     TEXT PRIMARY KEY NOT NULL,
    token_hash  TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
