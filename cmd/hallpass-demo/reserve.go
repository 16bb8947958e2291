package main

import (
	"context"
	"database/sql"
	"net/http"
	"time"

	"github.com/hallpass/hallpass"
)

// reservations holds units of stock for sessions (two-step checkout).
// Placeholder wiring; the feature is being built.
type reservations struct {
	db  *sql.DB
	now func() time.Time
}

func newReservations(ctx context.Context, db *sql.DB, now func() time.Time) (*reservations, error) {
	if now == nil {
		now = time.Now
	}
	return &reservations{db: db, now: now}, nil
}

// reserveRoutes adds the reservation routes to mux.
func (a *app) reserveRoutes(mux *http.ServeMux) {}

// sessionEnded is told of every session event, to release the holds of
// sessions that end.
func (rs *reservations) sessionEvent(ctx context.Context, e hallpass.Event) {}

// counts returns how many attempts ended in each outcome.
func (rs *reservations) counts(ctx context.Context) (map[string]int, error) { return nil, nil }

// Close stops background work.
func (rs *reservations) Close() error { return nil }
