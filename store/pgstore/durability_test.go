package pgstore

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/jackc/pgx/v5"
)

// TestUpdateDurability checks, from inside each write's own transaction,
// which synchronous_commit it commits with: a trigger records the
// setting as the statement changes the row. Only an Update of data and
// activity may commit without waiting for its flush, and not with
// SyncUpdates; logins (Rotate), privilege changes (Meta) and revocations
// always wait.
func TestUpdateDurability(t *testing.T) {
	url := testURL(t)
	for _, c := range []struct {
		name string
		sync bool
		want string // synchronous_commit of a data-only Update
	}{{"Default", false, "off"}, {"SyncUpdates", true, "on"}} {
		t.Run(c.name, func(t *testing.T) {
			table := newTable(t, url)
			s := open(t, url, Options{Table: table, SyncUpdates: c.sync, SweepInterval: -1})
			conn := admin(t, url)
			if base := setting(t, conn); base != "on" {
				t.Skipf("the server's synchronous_commit is %q; the test needs on", base)
			}
			log := table + "_log"
			tl, lq := pgx.Identifier{table}.Sanitize(), pgx.Identifier{log}.Sanitize()
			fn := pgx.Identifier{table + "_fn"}.Sanitize()
			for _, stmt := range []string{
				`CREATE TABLE ` + lq + ` (id serial PRIMARY KEY, op text, sync text)`,
				`CREATE FUNCTION ` + fn + `() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN
					INSERT INTO ` + lq + ` (op, sync) VALUES (TG_OP, current_setting('synchronous_commit'));
					RETURN NULL;
				END $$`,
				`CREATE TRIGGER t AFTER UPDATE OR DELETE ON ` + tl + ` FOR EACH ROW EXECUTE FUNCTION ` + fn + `()`,
			} {
				if _, err := conn.Exec(t.Context(), stmt); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() {
				conn.Exec(context.Background(), `DROP TABLE IF EXISTS `+lq)
				conn.Exec(context.Background(), `DROP TABLE IF EXISTS `+tl)
				conn.Exec(context.Background(), `DROP FUNCTION IF EXISTS `+fn+`()`)
			})
			last := func(what string) string {
				t.Helper()
				var sync string
				if err := conn.QueryRow(t.Context(), `SELECT sync FROM `+lq+` ORDER BY id DESC LIMIT 1`).Scan(&sync); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				return sync
			}

			ctx := t.Context()
			now := time.Now()
			r := benchRecord()
			if err := s.Create(ctx, r); err != nil {
				t.Fatal(err)
			}
			data := hallpass.Delta{
				Set:   map[string]json.RawMessage{"n": json.RawMessage(`1`)},
				Touch: &hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour)},
			}
			if err := s.Update(ctx, r.Key, data); err != nil {
				t.Fatal(err)
			}
			if got := last("data update"); got != c.want {
				t.Errorf("data update committed with synchronous_commit %q, want %q", got, c.want)
			}
			// The setting ends with the write's transaction: the next
			// statement on the same pooled connections sees the default.
			if got := setting(t, s.pool); got != "on" {
				t.Errorf("after the update, the pool's synchronous_commit is %q, want on", got)
			}

			meta := r.Meta
			meta.AuthLevel = "mfa"
			if err := s.Update(ctx, r.Key, hallpass.Delta{Meta: &meta}); err != nil {
				t.Fatal(err)
			}
			if got := last("meta update"); got != "on" {
				t.Errorf("Meta update committed with synchronous_commit %q, want on", got)
			}

			to := hallpass.KeyOf(hallpass.NewToken())
			if err := s.Rotate(ctx, r.Key, to, hallpass.Delta{Meta: &meta}); err != nil {
				t.Fatal(err)
			}
			if got := last("rotate"); got != "on" {
				t.Errorf("Rotate committed with synchronous_commit %q, want on", got)
			}
			if err := s.Delete(ctx, to); err != nil {
				t.Fatal(err)
			}
			if got := last("delete"); got != "on" {
				t.Errorf("Delete committed with synchronous_commit %q, want on", got)
			}
		})
	}
}

type queryRower interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}

func setting(t *testing.T, db queryRower) string {
	t.Helper()
	var v string
	if err := db.QueryRow(t.Context(), `SELECT current_setting('synchronous_commit')`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}
