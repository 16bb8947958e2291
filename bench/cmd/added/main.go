// Command added reads `go test -bench` output and prints, for every
// BenchmarkX/Lib, the median time, bytes, allocations and (for the
// server-backed stacks) round trips per request and what the library adds
// over BenchmarkX/Baseline; then the Hallpass/SCS ratios of the added cost
// on the in-process stores, the Hallpass/SCS ratios of the per-request
// time on the same server, what Redis's client-side cache adds over
// memstore, and the round trips per request, each against its target.
//
//	go run ./cmd/added new.txt
package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Targets for Hallpass, from the issues.
const (
	readRatioTarget  = 0.1 // Hallpass added time / SCS added time, read
	readAllocsTarget = 12  // allocations per read-only request
	writeRatioTarget = 0.2 // Hallpass added time / SCS added time, write

	// serverRatioTarget bounds Hallpass's per-request time over SCS's on
	// the same server (HallpassRedis/SCSRedis, HallpassPostgres/
	// SCSPostgres), read and write.
	serverRatioTarget = 0.5
	// cacheAddedTarget bounds, in ns, what a read-only request with
	// redisstore's client-side cache costs over the same on memstore.
	cacheAddedTarget = 2000
	// tripsTolerance is how far a median of round-trips/op may be from a
	// whole number of round trips (keep-alive pings add a little).
	tripsTolerance = 0.01
)

// serverPairs are Hallpass and SCS on the same server; target marks the
// pairs the ratio target is about.
var serverPairs = []struct {
	hallpass, scs string
	target        bool
}{
	{"HallpassRedis", "SCSRedis", true},
	{"HallpassRedisNoCache", "SCSRedis", false},
	{"HallpassPostgres", "SCSPostgres", true},
	{"HallpassPostgresNoCache", "SCSPostgres", false},
}

// tripTargets are the round trips per request the issue asks of Hallpass.
// A write request is the Load and the Update, one round trip each, unless
// a cache serves the Load from the instance's own previous write.
var tripTargets = []struct {
	bench string
	want  float64
	what  string
}{
	{"BenchmarkRead/HallpassRedis", 0, "read-only request, Redis cache on: no round trip"},
	{"BenchmarkRead/HallpassRedisNoCache", 1, "read-only request, Redis cache off: one round trip"},
	{"BenchmarkWrite/HallpassRedis", 1, "write request, Redis cache on: the write only (Load served from the instance's own write)"},
	{"BenchmarkWrite/HallpassRedisNoCache", 2, "write request, Redis cache off: Load + one for the write"},
	{"BenchmarkRead/HallpassPostgres", 0, "read-only request, PostgreSQL cache on: no round trip"},
	{"BenchmarkWrite/HallpassPostgres", 1, "write request, PostgreSQL cache on: the write only (Load served from the instance's own write)"},
	{"BenchmarkRead/HallpassPostgresNoCache", 1, "read-only request, PostgreSQL cache off: one query"},
	{"BenchmarkWrite/HallpassPostgresNoCache", 2, "write request, PostgreSQL cache off: Load + one for the write"},
}

var procSuffix = regexp.MustCompile(`-\d+$`)

// results maps a benchmark name without the -GOMAXPROCS suffix to its
// samples per unit.
type results map[string]map[string][]float64

func parse(r io.Reader, res results, order *[]string) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := procSuffix.ReplaceAllString(f[0], "")
		if res[name] == nil {
			res[name] = map[string][]float64{}
			*order = append(*order, name)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			res[name][f[i+1]] = append(res[name][f[i+1]], v)
		}
	}
	return sc.Err()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

func main() {
	res := results{}
	var order []string
	if len(os.Args) < 2 {
		if err := parse(os.Stdin, res, &order); err != nil {
			fail(err)
		}
	}
	for _, p := range os.Args[1:] {
		f, err := os.Open(p)
		if err != nil {
			fail(err)
		}
		err = parse(f, res, &order)
		f.Close()
		if err != nil {
			fail(err)
		}
	}
	if len(order) == 0 {
		fail(fmt.Errorf("no benchmark results"))
	}

	med := func(name, unit string) float64 { return median(res[name][unit]) }
	fmt.Println("| benchmark | n | time/op | added time | B/op | added B | allocs/op | added allocs | round trips/op |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, name := range order {
		group, _, _ := strings.Cut(name, "/")
		base := group + "/Baseline"
		if _, ok := res[base]; !ok {
			base = ""
		}
		ns, b, a := med(name, "ns/op"), med(name, "B/op"), med(name, "allocs/op")
		addNs, addB, addA := "", "", ""
		if base != "" && base != name {
			addNs = fmtNs(ns - med(base, "ns/op"))
			addB = fmt.Sprintf("%+.0f", b-med(base, "B/op"))
			addA = fmt.Sprintf("%+.0f", a-med(base, "allocs/op"))
		}
		trips := ""
		if t, ok := res[name]["round-trips/op"]; ok {
			trips = fmtTrips(median(t))
		}
		fmt.Printf("| %s | %d | %s | %s | %.0f | %s | %.0f | %s | %s |\n",
			name, len(res[name]["ns/op"]), fmtNs(ns), addNs, b, addB, a, addA, trips)
	}

	added := func(group, lib, unit string) float64 {
		return med(group+"/"+lib, unit) - med(group+"/Baseline", unit)
	}
	fmt.Println()
	fmt.Println("| ratio of added cost | time | allocs | bytes | target |")
	fmt.Println("|---|---:|---:|---:|---|")
	for _, g := range []struct {
		group  string
		target float64
	}{{"BenchmarkRead", readRatioTarget}, {"BenchmarkWrite", writeRatioTarget}} {
		for _, other := range []string{"SCS", "Gorilla"} {
			if res[g.group+"/Hallpass"] == nil || res[g.group+"/"+other] == nil || res[g.group+"/Baseline"] == nil {
				continue
			}
			r := func(unit string) float64 { return added(g.group, "Hallpass", unit) / added(g.group, other, unit) }
			target := ""
			if other == "SCS" {
				verdict := "met"
				if r("ns/op") > g.target {
					verdict = "MISSED"
				}
				target = fmt.Sprintf("time ≤ %.1fx: %s", g.target, verdict)
			}
			fmt.Printf("| %s Hallpass/%s | %.2fx | %.2fx | %.2fx | %s |\n",
				strings.TrimPrefix(g.group, "Benchmark"), other, r("ns/op"), r("allocs/op"), r("B/op"), target)
		}
	}
	if res["BenchmarkRead/Hallpass"] != nil {
		total := med("BenchmarkRead/Hallpass", "allocs/op")
		add := added("BenchmarkRead", "Hallpass", "allocs/op")
		verdict := "met"
		if add > readAllocsTarget {
			verdict = "MISSED"
		}
		fmt.Printf("\nHallpass read-only request: %.0f allocs/op in all, %+.0f over Baseline (target ≤ %d added: %s)\n",
			total, add, readAllocsTarget, verdict)
	}

	// Hallpass and SCS on the same server: per-request time, and the
	// added cost (over Baseline) for comparison.
	var rows []string
	for _, g := range []string{"BenchmarkRead", "BenchmarkWrite"} {
		for _, p := range serverPairs {
			h, o := g+"/"+p.hallpass, g+"/"+p.scs
			if res[h] == nil || res[o] == nil {
				continue
			}
			r := med(h, "ns/op") / med(o, "ns/op")
			addRatio := ""
			if res[g+"/Baseline"] != nil {
				addRatio = fmt.Sprintf("%.2fx", added(g, p.hallpass, "ns/op")/added(g, p.scs, "ns/op"))
			}
			target := ""
			if p.target {
				target = fmt.Sprintf("time ≤ %.1fx: %s", serverRatioTarget, verdict(r <= serverRatioTarget))
			}
			rows = append(rows, fmt.Sprintf("| %s %s/%s | %s | %s | %.2fx | %s | %.2fx | %.2fx | %s |",
				strings.TrimPrefix(g, "Benchmark"), p.hallpass, p.scs, fmtNs(med(h, "ns/op")), fmtNs(med(o, "ns/op")),
				r, addRatio, med(h, "allocs/op")/med(o, "allocs/op"), med(h, "B/op")/med(o, "B/op"), target))
		}
	}
	if len(rows) > 0 {
		fmt.Println()
		fmt.Println("| same server | Hallpass time/op | SCS time/op | time ratio | added-time ratio | allocs | bytes | target |")
		fmt.Println("|---|---:|---:|---:|---:|---:|---:|---|")
		for _, r := range rows {
			fmt.Println(r)
		}
	}

	// What the client-side cache adds over memstore on a read.
	if res["BenchmarkRead/HallpassRedis"] != nil && res["BenchmarkRead/Hallpass"] != nil {
		d := med("BenchmarkRead/HallpassRedis", "ns/op") - med("BenchmarkRead/Hallpass", "ns/op")
		fmt.Printf("\nRead-only request, Redis cache on, over memstore: %s (%s vs %s; target ≤ %s: %s)\n",
			fmtNs(d), fmtNs(med("BenchmarkRead/HallpassRedis", "ns/op")), fmtNs(med("BenchmarkRead/Hallpass", "ns/op")),
			fmtNs(cacheAddedTarget), verdict(d <= cacheAddedTarget))
	}

	// Round trips per request.
	var trips []string
	for _, t := range tripTargets {
		samples, ok := res[t.bench]["round-trips/op"]
		if !ok {
			continue
		}
		m := median(samples)
		trips = append(trips, fmt.Sprintf("| %s | %s | %s | %s |", t.bench, t.what, fmtTrips(m),
			verdict(math.Abs(m-t.want) <= tripsTolerance)))
	}
	if len(trips) > 0 {
		fmt.Println()
		fmt.Println("| round trips | target | median round-trips/op | met |")
		fmt.Println("|---|---|---:|---|")
		for _, r := range trips {
			fmt.Println(r)
		}
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// fmtTrips formats round trips per request: two decimals, more when it
// is close to but not zero.
func fmtTrips(x float64) string {
	if x != 0 && math.Abs(x) < 0.005 {
		return fmt.Sprintf("%.2g", x)
	}
	return fmt.Sprintf("%.2f", x)
}

func fmtNs(ns float64) string {
	sign := ""
	if ns < 0 {
		sign, ns = "-", -ns
	}
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%s%.2fms", sign, ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%s%.2fµs", sign, ns/1e3)
	}
	return fmt.Sprintf("%s%.0fns", sign, ns)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "added:", err)
	os.Exit(1)
}
