package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
)

// secret returns the app's secret called name, made from crypto/rand the
// first time and kept in the database, so that it survives restarts and
// every instance on the same database agrees on it.
func secret(ctx context.Context, db *sql.DB, name string) ([]byte, error) {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)`); err != nil {
		return nil, fmt.Errorf("secrets table: %w", err)
	}
	fresh := make([]byte, 32)
	rand.Read(fresh)
	// Two instances starting at once both insert; the first wins and both
	// read it.
	if _, err := db.ExecContext(ctx, `INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`, name, fresh); err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	var v []byte
	if err := db.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v); err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return v, nil
}
