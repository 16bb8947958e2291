// Command added reads `go test -bench` output and prints, for every
// BenchmarkX/Lib, the median time, bytes and allocations per request and
// what the library adds over BenchmarkX/Baseline, then the Hallpass/SCS
// ratios of the added cost against the targets.
//
//	go run ./cmd/added new.txt
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Targets for Hallpass, from the issue.
const (
	readRatioTarget  = 0.1 // Hallpass added time / SCS added time, read
	readAllocsTarget = 12  // allocations per read-only request
	writeRatioTarget = 0.2 // Hallpass added time / SCS added time, write
)

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
	fmt.Println("| benchmark | n | time/op | added time | B/op | added B | allocs/op | added allocs |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
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
		fmt.Printf("| %s | %d | %s | %s | %.0f | %s | %.0f | %s |\n",
			name, len(res[name]["ns/op"]), fmtNs(ns), addNs, b, addB, a, addA)
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
