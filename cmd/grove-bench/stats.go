package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0..100) of xs by linear
// interpolation between the closest ranks (the "type 7" estimator of R and
// NumPy's default): rank h = (n-1)·p/100, value x[⌊h⌋] + (h-⌊h⌋)·(x[⌊h⌋+1]-x[⌊h⌋]).
// xs need not be sorted and is not modified. It returns NaN for no samples.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 || math.IsNaN(p) {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	p = min(max(p, 0), 100)
	h := float64(len(s)-1) * p / 100
	lo := int(math.Floor(h))
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[lo] + (h-float64(lo))*(s[lo+1]-s[lo])
}

// summary describes a sample of durations in milliseconds.
type summary struct {
	N    int
	P50  float64
	P99  float64
	Min  float64
	Max  float64
	Mean float64
}

// summarize turns durations into a millisecond summary; an empty sample
// gives N=0 and NaN statistics.
func summarize(ds []time.Duration) summary {
	if len(ds) == 0 {
		nan := math.NaN()
		return summary{P50: nan, P99: nan, Min: nan, Max: nan, Mean: nan}
	}
	ms := make([]float64, len(ds))
	sum := 0.0
	for i, d := range ds {
		ms[i] = float64(d) / float64(time.Millisecond)
		sum += ms[i]
	}
	return summary{N: len(ms), P50: percentile(ms, 50), P99: percentile(ms, 99),
		Min: slices.Min(ms), Max: slices.Max(ms), Mean: sum / float64(len(ms))}
}

// perSecond is n events over d, or 0 when d is not positive.
func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// ratio is a/b, or NaN when either side is missing or b is 0.
func ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}
