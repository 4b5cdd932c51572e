// Command grove-bench measures grove against plain git on a synthetic
// repository: it runs M trivial tasks at concurrency C through a real
// `grove serve`, the same git work directly with git commands, and prints
// latencies, throughput and grove/baseline ratios. With --warm N the daemon
// keeps a warm pool, and warm probes (single tasks submitted when the pool
// is full at a steady tip, see warm.go) measure warm_start_p50_ms. See
// the README's "Performance"; `make bench` runs it with the default
// configuration.
package main

import "os"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }
