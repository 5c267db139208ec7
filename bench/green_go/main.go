// bench/green_go/main.go — the Go peer of bench/green_bench.c (issue 7):
// goroutines doing the work of conc's green-thread rows, so the table can
// show conc-vs-go ratios. Built at bench time by CMake with Debian's
// golang-go into <build>/bench/green_go_peer (never committed).
//
// Usage:
//
//	green_go_peer switch N      ns per switch: two goroutines each call
//	                            runtime.Gosched() N times (2N switches)
//	green_go_peer spawn_join N  ns per `go f()` of an empty body + join
//	                            (sync.WaitGroup), N times one after the other
//	green_go_peer pingpong N    ns per hand-off: two goroutines pass 1..N
//	                            back and forth through two unbuffered
//	                            channels (2N hand-offs)
//	green_go_peer idle_rss N    bytes of RSS per goroutine with N goroutines
//	                            alive, each blocked receiving from a channel
//	green_go_peer echo          echo server on 127.0.0.1 (port on stdout), a
//	                            goroutine per connection; exits when stdin
//	                            reaches EOF (the bench closes it)
//
// switch and spawn_join do a warm-up with a tenth of N first (discarded),
// then one measured run, and print one value. Every mode runs with
// GOMAXPROCS=1: conc's green threads of a hub all run on one OS thread, and
// so do the other peers (Boost.Context, greenlet, gevent, the epoll server).
// A failed check prints the reason on stderr and exits with status 1.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "green_go_peer: "+format+"\n", a...)
	os.Exit(1)
}

// switchRun: two goroutines yield to each other n times each; the value is
// the time per Gosched call. turn counts every iteration of both; a
// Gosched that came back without the other goroutine having run in
// between did not switch. Go's scheduler does that now and then on
// purpose (every 61st schedule looks at the global run queue first, where
// Gosched has just put the caller): about 3% of the calls here. More than
// 10% fails the run (a yield that returns at once would look very cheap).
func switchRun(n int) float64 {
	var wg sync.WaitGroup
	var turn int64 // only one goroutine runs at a time (GOMAXPROCS=1), but be exact
	var missed [2]int
	body := func(id int) {
		defer wg.Done()
		for i := 0; i < n; i++ {
			before := atomic.AddInt64(&turn, 1)
			runtime.Gosched()
			if atomic.LoadInt64(&turn) == before {
				missed[id]++
			}
		}
	}
	wg.Add(2)
	t0 := time.Now()
	go body(0)
	go body(1)
	wg.Wait()
	el := time.Since(t0)
	if turn != int64(2*n) {
		die("switch: %d iterations instead of %d", turn, 2*n)
	}
	if missed[0]+missed[1] > n/5+2 {
		die("switch: %d of %d Gosched calls returned without the other goroutine running",
			missed[0]+missed[1], 2*n)
	}
	return float64(el.Nanoseconds()) / float64(2*n)
}

var spawnCount int64

func spawnJoinRun(n int) float64 {
	var wg sync.WaitGroup
	spawnCount = 0
	t0 := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			spawnCount++ // the empty body, counted; wg.Wait orders it before the check
			wg.Done()
		}()
		wg.Wait()
	}
	el := time.Since(t0)
	if spawnCount != int64(n) {
		die("spawn_join: %d bodies ran instead of %d", spawnCount, n)
	}
	return float64(el.Nanoseconds()) / float64(n)
}

// pingpongRun: goroutine A sends i on ping and receives it back on pong,
// B receives on ping and sends on pong; unbuffered channels, as Go
// programs hand work from one goroutine to another. A checks each value.
func pingpongRun(n int) float64 {
	ping, pong := make(chan int), make(chan int)
	done := make(chan int)
	t0 := time.Now()
	go func() {
		for i := 0; i < n; i++ {
			pong <- <-ping
		}
	}()
	go func() {
		bad := 0
		for i := 1; i <= n; i++ {
			ping <- i
			if <-pong != i {
				bad++
			}
		}
		done <- bad
	}()
	bad := <-done
	el := time.Since(t0)
	if bad != 0 {
		die("pingpong: %d of %d values came back wrong", bad, n)
	}
	return float64(el.Nanoseconds()) / float64(2*n)
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		die("read /proc/self/statm: %v", err)
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		die("parse /proc/self/statm: %v", err)
	}
	return resident * int64(os.Getpagesize())
}

func idleRSS(n int) float64 {
	ch := make(chan struct{})
	var started int64
	var wg sync.WaitGroup
	runtime.GC()
	before := rssBytes()
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			atomic.AddInt64(&started, 1)
			<-ch
			wg.Done()
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for atomic.LoadInt64(&started) < int64(n) {
		runtime.Gosched()
		if time.Now().After(deadline) {
			die("idle_rss: only %d of %d goroutines started in 60 s", started, n)
		}
	}
	after := rssBytes()
	close(ch)
	wg.Wait()
	return float64(after-before) / float64(n)
}

func echoServe() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die("listen: %v", err)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			die("accept: %v", err)
		}
		go func(c net.Conn) {
			defer c.Close()
			buf := make([]byte, 4096)
			for {
				k, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:k]); err != nil {
					return
				}
			}
		}(c)
	}
}

func main() {
	runtime.GOMAXPROCS(1)
	if len(os.Args) < 2 {
		die("usage: green_go_peer switch|spawn_join|pingpong|idle_rss N | echo")
	}
	if os.Args[1] == "echo" {
		echoServe()
		return
	}
	if len(os.Args) < 3 {
		die("%s needs N", os.Args[1])
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil || n < 1 {
		die("bad N %q", os.Args[2])
	}
	warm := n / 10
	if warm < 1 {
		warm = 1
	}
	var v float64
	switch os.Args[1] {
	case "switch":
		switchRun(warm)
		v = switchRun(n)
	case "spawn_join":
		spawnJoinRun(warm)
		v = spawnJoinRun(n)
	case "pingpong":
		pingpongRun(warm)
		v = pingpongRun(n)
	case "idle_rss":
		v = idleRSS(n) // a fresh process per measurement: no warm-up
	default:
		die("unknown mode %q", os.Args[1])
	}
	fmt.Printf("%.4f\n", v)
}
