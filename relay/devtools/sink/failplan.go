package sink

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
)

// basisPoints is 100%: shares are integers out of this.
const basisPoints = 10000

// verdict is what the plan says about one command.
type verdict int

const (
	verdictOK verdict = iota
	verdictTemp
	verdictPerm
)

// failPlan spreads failures evenly and exactly: of the first N commands
// (counting from Seed), floor(N*(temp+perm)/10000) fail, and of the first F
// failures floor(F*temp/(temp+perm)) are temporary, the rest permanent. It is
// a Bresenham walk over two atomic counters, so concurrent sessions only
// change which command fails, never how many.
type failPlan struct {
	temp, perm, total uint64
	seed              uint64
	n, fails          atomic.Uint64
}

func newFailPlan(temp, perm int, seed uint64) (*failPlan, error) {
	if temp < 0 || perm < 0 || temp+perm > basisPoints {
		return nil, fmt.Errorf("sink: failure shares %d+%d basis points: want each >= 0 and a total <= 100%%", temp, perm)
	}
	return &failPlan{temp: uint64(temp), perm: uint64(perm), total: uint64(temp + perm), seed: seed}, nil
}

// next decides the fate of the next command.
func (p *failPlan) next() verdict {
	if p.total == 0 {
		return verdictOK
	}
	k := p.n.Add(1) - 1 + p.seed
	if (k+1)*p.total/basisPoints == k*p.total/basisPoints {
		return verdictOK
	}
	j := p.fails.Add(1) - 1
	if (j+1)*p.temp/p.total > j*p.temp/p.total {
		return verdictTemp
	}
	return verdictPerm
}

// ExpectedFailures returns how many of the first n commands a sink with
// these shares (in basis points) and seed 0 fails, temporarily and permanently.
func ExpectedFailures(n int64, temp, perm int) (tempN, permN int64) {
	total := int64(temp + perm)
	if total == 0 || n <= 0 {
		return 0, 0
	}
	f := n * total / basisPoints
	tempN = f * int64(temp) / total
	return tempN, f - tempN
}

// ParseShare parses a share such as "5%", "0.25%" or "100%" (a bare number
// is a percentage too) into basis points; at most two decimals.
func ParseShare(s string) (int, error) {
	v := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	whole, frac, _ := strings.Cut(v, ".")
	if len(frac) > 2 || whole == "" && frac == "" || !digits(whole) || !digits(frac) {
		return 0, fmt.Errorf("bad share %q (use a percentage such as 5%% or 0.25%%)", s)
	}
	frac += strings.Repeat("0", 2-len(frac))
	w, err1 := strconv.Atoi(orZero(whole))
	f, err2 := strconv.Atoi(frac)
	bp := w*100 + f
	if err1 != nil || err2 != nil || w < 0 || f < 0 || bp > basisPoints {
		return 0, fmt.Errorf("bad share %q (want 0%% to 100%%)", s)
	}
	return bp, nil
}

func digits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func orZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}
