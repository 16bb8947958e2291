package memstore

import (
	"testing"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/store/storetest"
)

// One memstore shared by two Managers is the in-process case of two
// instances: it has no cache, so endings are visible at once.
func sharedPair(t testing.TB) (hallpass.Store, hallpass.Store) {
	s := New(nil)
	t.Cleanup(func() { s.Close() })
	return s, s
}

func TestInstances(t *testing.T) { storetest.RunInstances(t, sharedPair, 0) }

func BenchmarkInstances(b *testing.B) { storetest.BenchInstances(b, sharedPair, 0) }
