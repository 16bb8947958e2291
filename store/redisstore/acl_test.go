package redisstore

import (
	"context"
	"math"
	"net/url"
	"testing"
	"time"

	"github.com/hallpass/hallpass"
)

// TestOwnWriteNoClientList checks that on a server whose ACL denies CLIENT
// LIST, which the writer's connection check uses, the store gives up its
// own write connection for good rather than redialling it: whether the
// ACL denies it from the start, or from after the connection is up.
func TestOwnWriteNoClientList(t *testing.T) {
	raw := testURL(t)
	admin := newClient(t, raw, nil)
	user := "hallpass-test-" + hallpass.NewHandle()
	const pass = "hallpass-test-pass"
	setUser := func(rules ...string) {
		t.Helper()
		args := append([]string{"ACL", "SETUSER", user}, rules...)
		if err := admin.Do(t.Context(), admin.B().Arbitrary(args...).Build()).Error(); err != nil {
			t.Skipf("ACL SETUSER: %v", err)
		}
	}
	t.Cleanup(func() {
		_ = admin.Do(context.Background(), admin.B().Arbitrary("ACL", "DELUSER", user).Build()).Error()
	})
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, pass)
	userURL := u.String()

	// gaveUp waits for s's writer to settle for good on the shared
	// connections, while writes go on succeeding.
	gaveUp := func(t *testing.T, s *Store) {
		t.Helper()
		r := liveRecord(testUser())
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for i := 0; s.writer.retryAt.Load() != math.MaxInt64 || s.writer.cur.Load() != nil; i++ {
			if time.Now().After(deadline) {
				t.Fatalf("writer still tries its own connection: retryAt %d, connected %v",
					s.writer.retryAt.Load(), s.writer.cur.Load() != nil)
			}
			if err := s.Update(t.Context(), r.Key, setN(i)()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		for i := range 5 {
			if err := s.Update(t.Context(), r.Key, setN(i)()); err != nil {
				t.Fatal(err)
			}
			if s.writer.own(r.Key) != nil || s.writer.dialing.Load() {
				t.Fatal("writer went back to its own connection")
			}
		}
	}

	t.Run("denied from the start", func(t *testing.T) {
		setUser("reset", "on", ">"+pass, "~*", "&*", "+@all", "-client|list")
		s := newStore(t, userURL, Options{KeyPrefix: testPrefix(t, raw)}, nil)
		gaveUp(t, s)
	})
	t.Run("denied later", func(t *testing.T) {
		setUser("reset", "on", ">"+pass, "~*", "&*", "+@all")
		s := newStore(t, userURL, Options{KeyPrefix: testPrefix(t, raw)}, nil)
		r := liveRecord(testUser())
		if err := s.Create(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		writeOwn(t, s, r.Key, setN(0))
		setUser("-client|list")
		time.Sleep(2 * writerCheck)
		gaveUp(t, s)
	})
}
