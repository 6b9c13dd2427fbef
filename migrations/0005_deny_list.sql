-- Addresses no payment may go to (sanctions screening, known scams), managed by admins.
CREATE TABLE denied_addresses (
    address     TEXT PRIMARY KEY NOT NULL,
    reason      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
