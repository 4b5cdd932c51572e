package main

import (
	"math"
	"testing"
	"time"

	"github.com/matryer/is"
)

func TestPercentile(t *testing.T) {
	is := is.New(t)
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

	is.True(math.IsNaN(percentile(nil, 50)))              // no samples
	is.Equal(percentile([]float64{7}, 0), 7.0)            // one sample is every percentile
	is.Equal(percentile([]float64{7}, 99), 7.0)           //
	is.Equal(percentile([]float64{7}, 100), 7.0)          //
	is.Equal(percentile([]float64{4, 1, 3, 2}, 50), 2.5)  // even count: midpoint, unsorted input
	is.Equal(percentile([]float64{3, 1, 2}, 50), 2.0)     // odd count: the middle one
	is.Equal(percentile([]float64{1, 2, 3, 4}, 0), 1.0)   // p0 is the minimum
	is.Equal(percentile([]float64{1, 2, 3, 4}, 100), 4.0) // p100 is the maximum
	is.Equal(percentile([]float64{1, 2, 3, 4}, 150), 4.0) // clamped
	is.Equal(percentile([]float64{1, 2, 3, 4}, -5), 1.0)  // clamped

	// 1..100: rank h = 99·p/100.
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	is.True(near(percentile(xs, 50), 50.5))
	is.True(near(percentile(xs, 99), 99.01))
	is.True(near(percentile(xs, 90), 90.1))

	// 40 samples (the default task count): p99 interpolates the top two.
	ys := make([]float64, 40)
	for i := range ys {
		ys[i] = float64(10 * (i + 1))
	}
	is.True(near(percentile(ys, 99), 390+0.61*10))

	in := []float64{3, 1, 2}
	percentile(in, 50)
	is.Equal(in, []float64{3, 1, 2}) // input not reordered
}

func TestSummarize(t *testing.T) {
	is := is.New(t)
	s := summarize([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 1500 * time.Microsecond})
	is.Equal(s.N, 4)
	is.Equal(s.Min, 1.0)
	is.Equal(s.Max, 3.0)
	is.Equal(s.P50, 1.75)
	is.Equal(s.Mean, 1.875)

	e := summarize(nil)
	is.Equal(e.N, 0)
	is.True(math.IsNaN(e.P50))
}

func TestRatioAndRate(t *testing.T) {
	is := is.New(t)
	is.Equal(perSecond(10, 2*time.Second), 5.0)
	is.Equal(perSecond(10, 0), 0.0)
	is.Equal(ratio(1, 4), 0.25)
	is.True(math.IsNaN(ratio(1, 0)))
	is.True(math.IsNaN(ratio(math.NaN(), 1)))
}
