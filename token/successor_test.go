package token

import (
	"encoding/hex"
	"testing"
)

// TestRefreshTombstoneFromEarlierRelease opens a refresh tombstone sealed
// by the release before package successor took over the sealing: a
// client holding a token rotated just before an upgrade must still be
// led to its successor within the grace.
func TestRefreshTombstoneFromEarlierRelease(t *testing.T) {
	const (
		old  = "hprt_-tXsOg45qKr1TLIk9lg0T7heV1th9FDAAGouPtSbwBo"
		next = "hprt_u5ODEYJw53ZS3WnrmFdvr7vrcv70a26qjcUX3W5lUlI"
	)
	sealed, _ := hex.DecodeString("6c954ff6734f2816a657e7e20d0283f169c17214c3a36d2a0bc6d6f60cf68b7d164e799de15846e66336612ca44e9e2cd055ed5d8026d284de8bce13ee6c50f26672de55b38656cf8c97eb34")
	if got, ok := openSuccessor(old, sealed); !ok || got != next {
		t.Fatalf("openSuccessor = %q, %v; want %q", got, ok, next)
	}
}
