package pgstore

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
)

// benchRecord is a signed-in session with a little data, as most are.
func benchRecord() *hallpass.Record {
	now := time.Now()
	return &hallpass.Record{
		Key:    hallpass.KeyOf(hallpass.NewToken()),
		Handle: hallpass.NewHandle(),
		Meta: hallpass.Meta{UserID: "bench-" + hallpass.NewHandle(), AuthTime: now, AuthLevel: "password",
			AbsoluteDeadline: now.Add(12 * time.Hour)},
		Touch:     hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour), LastIP: "198.51.100.4", LastUA: "bench/1"},
		CreatedAt: now,
		Data: map[string]json.RawMessage{
			"cart":  json.RawMessage(`[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]`),
			"theme": json.RawMessage(`"dark"`),
			"csrf":  json.RawMessage(`"k8d7f6g5h4j3k2l1"`),
		},
	}
}

func benchLoad(b *testing.B, ttl time.Duration) {
	url := testURL(b)
	s := open(b, url, Options{Table: newTable(b, url), CacheTTL: ttl})
	r := benchRecord()
	if err := s.Create(b.Context(), r); err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Load(ctx, r.Key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoad reads one session from the database each time.
func BenchmarkLoad(b *testing.B) { benchLoad(b, -1) }

// BenchmarkLoadCached reads one session from the local cache.
func BenchmarkLoadCached(b *testing.B) { benchLoad(b, time.Minute) }

// BenchmarkUpdate saves what a typical request changes: one key and the
// activity.
func BenchmarkUpdate(b *testing.B) { benchUpdate(b, false) }

// BenchmarkUpdateNoNotify is BenchmarkUpdate without the NOTIFY, to show
// what notifications cost a write.
func BenchmarkUpdateNoNotify(b *testing.B) { benchUpdate(b, true) }

func benchUpdate(b *testing.B, noNotify bool) {
	url := testURL(b)
	s := open(b, url, Options{Table: newTable(b, url), CacheTTL: -1, DisableNotify: noNotify})
	r := benchRecord()
	if err := s.Create(b.Context(), r); err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		d := hallpass.Delta{
			Set:   map[string]json.RawMessage{"n": json.RawMessage(`1`)},
			Touch: &hallpass.Touch{LastSeen: now, IdleDeadline: now.Add(time.Hour), LastIP: "198.51.100.4"},
		}
		if err := s.Update(ctx, r.Key, d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInstances measures how long a revocation on one instance takes
// to reach another's cache: read visible-µs.
func BenchmarkInstances(b *testing.B) {
	storetest.BenchInstances(b, pair(testURL(b), time.Minute), 5*time.Millisecond)
}
