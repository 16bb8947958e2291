package pgstore

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/jackc/pgx/v5"
)

// TestQueryPlans checks that the statements the store runs use the
// indexes meant for them on a table of some size, both as PostgreSQL
// plans them for given values and as it plans a prepared statement for
// any value (the generic plan), which it may switch to after five runs.
func TestQueryPlans(t *testing.T) {
	url := testURL(t)
	table := newTable(t, url)
	s := open(t, url, Options{Table: table, SweepInterval: -1})
	conn := admin(t, url)
	now := time.Now().UnixMilli()
	// 20000 guests and 200 users with 10 sessions each, a tenth expired.
	insertRows(t, conn, table, "guest", 18000, now+3600_000, "")
	insertRows(t, conn, table, "expired", 2000, now-1000, "")
	for i := range 200 {
		insertRows(t, conn, table, "user", 10, now+3600_000, fmt.Sprintf("user-%d", i))
	}
	if _, err := conn.Exec(t.Context(), "ANALYZE "+pgx.Identifier{table}.Sanitize()); err != nil {
		t.Fatal(err)
	}

	key := hallpass.KeyOf("some token")
	keyLit := fmt.Sprintf(`'\x%x'::bytea`, key[:])
	d := hallpass.Delta{
		Set:   map[string]json.RawMessage{"a": json.RawMessage(`1`)},
		Touch: &hallpass.Touch{LastSeen: time.Now(), IdleDeadline: time.Now().Add(time.Hour), LastIP: "ip"},
	}
	patch, remove, err := encodeDelta(d.Set, []string{"b"}, false)
	if err != nil {
		t.Fatal(err)
	}
	upd := s.q.buildUpdate(key, nil, &d, patch, remove, now, key.String(), false)
	fill := s.q.buildUpdate(key, nil, &d, patch, remove, now, key.String(), true)

	pkey := pgx.Identifier{table + "_pkey"}.Sanitize()
	for _, c := range []struct {
		name, sql string
		params    []string // SQL literals for $1, $2, ...
		index     string
	}{
		{"Load", s.q.load, []string{keyLit}, pkey},
		{"Update", upd.sql, literals(t, upd.args), pkey},
		{"UpdateFill", fill.sql, literals(t, fill.args), pkey},
		{"ListUser", s.q.listUser, []string{"'user-7'", fmt.Sprint(now)}, s.q.userIndexIdent},
		{"DeleteUser", s.q.deleteUser, []string{"'user-7'", fmt.Sprint(now), `'{}'::bytea[]`, "'chan'"}, s.q.userIndexIdent},
		{"Delete", s.q.deleteKeys, []string{"ARRAY[" + keyLit + "]", "'chan'"}, pkey},
		{"Sweep", s.q.sweep, []string{fmt.Sprint(now), "1000"}, s.q.expiresIndexIdent},
		{"DropExpired", s.q.dropExpired, []string{keyLit, fmt.Sprint(now)}, pkey},
		// A Rotate with a Limit: the user of from, then the user's other
		// sessions, read through the user index.
		{"UserOf", s.q.userOfLocked, []string{keyLit, fmt.Sprint(now)}, pkey},
		{"LockPeers", s.q.lockPeers, []string{"'user-7'", fmt.Sprint(now), keyLit}, s.q.userIndexIdent},
		{"CountPeers", s.q.countPeers, []string{"'user-7'", fmt.Sprint(now), keyLit}, s.q.userIndexIdent},
		{"Evict", s.q.evict, []string{"'user-7'", fmt.Sprint(now), keyLit, "2", "'chan'"}, s.q.userIndexIdent},
		// ... and deletes the oldest by key.
		{"EvictByKey", s.q.evict, []string{"'user-7'", fmt.Sprint(now), keyLit, "2", "'chan'"}, pkey},
	} {
		for _, mode := range planModes {
			t.Run(c.name+"/"+mode, func(t *testing.T) {
				plan := explain(t, conn, mode, c.sql, c.params)
				// The unquoted name is what EXPLAIN prints for these.
				index := strings.Trim(c.index, `"`)
				if !strings.Contains(plan, " using "+index+" ") && !strings.Contains(plan, "Bitmap Index Scan on "+index+" ") {
					t.Errorf("plan does not use %s:\n%s", c.index, plan)
				}
				if strings.Contains(plan, "Seq Scan") {
					t.Errorf("plan scans the table:\n%s", plan)
				}
			})
		}
	}

	// Count reads the expires_at index alone, where the visibility map
	// says the heap need not be visited: what autovacuum keeps it as on a
	// table in use, and VACUUM does here. Most rows being live, the
	// planner rightly prefers the table to an index scan that would visit
	// every heap page anyway.
	if _, err := conn.Exec(t.Context(), "VACUUM ANALYZE "+pgx.Identifier{table}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	for _, mode := range planModes {
		t.Run("Count/"+mode, func(t *testing.T) {
			plan := explain(t, conn, mode, s.q.count, []string{fmt.Sprint(now)})
			index := strings.Trim(s.q.expiresIndexIdent, `"`)
			if !strings.Contains(plan, "Index Only Scan using "+index+" ") {
				t.Errorf("plan is not an index-only scan of %s:\n%s", index, plan)
			}
			if strings.Contains(plan, "Seq Scan") {
				t.Errorf("plan scans the table:\n%s", plan)
			}
		})
	}
}

// planModes are the two ways PostgreSQL may plan a prepared statement:
// for the values given, and for any value.
var planModes = []string{"force_custom_plan", "force_generic_plan"}

// explain returns the plan of sql with params (SQL literals for $1, $2,
// ...), prepared and planned in plan_cache_mode mode.
func explain(t *testing.T, conn *pgx.Conn, mode, sql string, params []string) string {
	t.Helper()
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(t.Context())
	if _, err := tx.Exec(t.Context(), "SET LOCAL plan_cache_mode = "+mode); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "PREPARE q AS "+sql); err != nil {
		t.Fatal(err)
	}
	// Statements outlive transactions.
	defer conn.Exec(t.Context(), "DEALLOCATE q")
	rows, err := tx.Query(t.Context(), "EXPLAIN EXECUTE q("+strings.Join(params, ", ")+")", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// literals spells arguments of buildUpdate as SQL literals for EXECUTE.
func literals(t *testing.T, args []any) []string {
	var out []string
	for _, a := range args {
		switch v := a.(type) {
		case nil:
			out = append(out, "NULL")
		case []byte:
			if json.Valid(v) && len(v) > 0 && v[0] == '{' {
				out = append(out, "'"+strings.ReplaceAll(string(v), "'", "''")+"'")
			} else {
				out = append(out, fmt.Sprintf(`'\x%x'::bytea`, v))
			}
		case string:
			out = append(out, "'"+strings.ReplaceAll(v, "'", "''")+"'")
		case []string:
			var q []string
			for _, s := range v {
				q = append(q, `"`+s+`"`)
			}
			out = append(out, "'{"+strings.Join(q, ",")+"}'")
		case int64, int, bool:
			out = append(out, fmt.Sprint(v))
		default:
			t.Fatalf("no literal for %T", a)
		}
	}
	return out
}
