package pgstore

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

// TestUpdateShapes checks that the cached text of an update statement is
// the text built afresh for every combination of a Delta's parts, so
// that no two combinations share a cache slot.
func TestUpdateShapes(t *testing.T) {
	key, to := hallpass.KeyOf("a"), hallpass.KeyOf("b")
	now := time.UnixMilli(1_700_000_000_000)
	var touches []*hallpass.Touch
	touches = append(touches, nil)
	for _, seen := range []time.Time{{}, now} {
		for _, idle := range []time.Time{{}, now.Add(time.Hour)} {
			for _, ip := range []string{"", "ip"} {
				for _, ua := range []string{"", "ua"} {
					touches = append(touches, &hallpass.Touch{LastSeen: seen, IdleDeadline: idle, LastIP: ip, LastUA: ua})
				}
			}
		}
	}
	for _, notify := range []bool{false, true} {
		for _, async := range []bool{false, true} {
			cached := newQueries("t", notify, async)
			seen := map[string]bool{}
			for _, rot := range []bool{false, true} {
				for _, clr := range []bool{false, true} {
					for _, rm := range [][]string{nil, {"x"}} {
						for _, set := range []map[string]json.RawMessage{nil, {"s": json.RawMessage(`1`)}} {
							for _, fill := range []bool{false, true} {
								for _, meta := range []*hallpass.Meta{nil, {UserID: "u", AuthTime: now}} {
									for _, touch := range touches {
										d := hallpass.Delta{Clear: clr, Remove: rm, Set: set, Meta: meta, Touch: touch}
										patch, remove, err := encodeDelta(d.Set, d.Remove, d.Clear)
										if err != nil {
											t.Fatal(err)
										}
										var tp *hallpass.Key
										if rot {
											tp = &to
										}
										fresh := newQueries("t", notify, async)
										want := fresh.buildUpdate(key, tp, &d, patch, remove, 5, "p", fill && !rot)
										for range 2 {
											got := cached.buildUpdate(key, tp, &d, patch, remove, 5, "p", fill && !rot)
											if got.sql != want.sql || !reflect.DeepEqual(got.args, want.args) {
												t.Fatalf("%+v: cached\n%s %v\nwant\n%s %v", d, got.sql, got.args, want.sql, want.args)
											}
										}
										seen[want.sql] = true
									}
								}
							}
						}
					}
				}
			}
			if len(seen) < 50 {
				t.Errorf("only %d distinct statements", len(seen))
			}
		}
	}
}
