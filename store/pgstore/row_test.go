package pgstore

import (
	"bytes"
	"encoding/json"
	"maps"
	"testing"

	"github.com/jackc/pgx/v5"
)

var dataCases = []string{
	`{}`,
	`{"a": 1}`,
	`{"n":1,"s":"x"}`,
	`{"cart": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}], "theme": "dark"}`,
	`{"q\"uote": "a \"b\" , } ] :", "back\\slash": "\\", "nl\n": "\u0001\t"}`,
	`{"brace}": {"x": [1, [2, {"y": "}]"}]], "z": null}, "t": true, "f": false}`,
	`{"é": "ünïcödé ✓", "": "", "num": -1.5e+10, "big": 123456789012345678901234567890}`,
	`{"deep": [[[[[[[[[[]]]]]]]]]], "e": {}, "a": []}`,
	`{"\ud83d\ude00": "\ud83d\ude00", "u": "\u00e9"}`,
}

// TestDecodeData checks the data decoder against encoding/json on what
// PostgreSQL prints for each case, in both wire formats.
func TestDecodeData(t *testing.T) {
	url := testURL(t)
	conn := admin(t, url)
	for _, c := range dataCases {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
			rows, err := conn.Query(t.Context(), `SELECT $1::text::jsonb`, mode, c)
			if err != nil {
				t.Fatal(err)
			}
			if !rows.Next() {
				t.Fatal(rows.Err())
			}
			raw := bytes.Clone(rows.RawValues()[0])
			bin := rows.FieldDescriptions()[0].Format == 1
			rows.Close()
			if bin {
				raw = raw[1:]
			}
			got, err := decodeData(raw)
			if err != nil {
				t.Fatalf("%s: %v", raw, err)
			}
			var want map[string]json.RawMessage
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 {
				want = nil
			}
			if !maps.EqualFunc(got, want, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
				t.Errorf("%s: decoded %q, want %q", raw, got, want)
			}
			if _, ok := splitObject(raw); !ok && len(raw) > 2 {
				t.Errorf("%s: not split by the fast path", raw)
			}
			for k, v := range got {
				if cap(v) != len(v) {
					t.Errorf("%s: value of %q has room to grow into its neighbor", raw, k)
				}
			}
		}
	}
}

// FuzzSplitObject checks that whatever the fast path accepts of valid
// JSON, it reads as encoding/json does.
func FuzzSplitObject(f *testing.F) {
	for _, c := range dataCases {
		f.Add([]byte(c))
	}
	f.Add([]byte("{\"\xff\":0}")) // invalid UTF-8 in a key
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := splitObject(b)
		if !ok || !json.Valid(b) {
			return
		}
		var want map[string]json.RawMessage
		if err := json.Unmarshal(b, &want); err != nil {
			return // valid JSON but not an object
		}
		if len(want) == 0 {
			want = nil
		}
		if !maps.EqualFunc(got, want, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
			t.Errorf("%s: split %q, want %q", b, got, want)
		}
	})
}
