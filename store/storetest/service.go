package storetest

import (
	"os"
	"testing"
)

// ServiceURL returns the URL of a test server from the environment
// variable name (HALLPASS_TEST_REDIS_URL, say). Without it the test is
// skipped with a message naming the variable; under CI (CI=true), where
// nothing may be skipped, it fails instead.
func ServiceURL(t testing.TB, name string) string {
	t.Helper()
	url := os.Getenv(name)
	if url != "" {
		return url
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set; CI must provide the server (see .ci/run)", name)
	}
	t.Skipf("set %s to run this test against a real server", name)
	return ""
}
