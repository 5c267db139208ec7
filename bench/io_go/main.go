// io_bench's Go peers: `io_go_peer echo|http [port]` prints "ready <port>"
// and serves until killed. echo: a goroutine per connection, reading up to
// 4 KiB and writing it back (Go's netpoller underneath; GOMAXPROCS=1 is set
// by the bench). http: net/http's server with one handler writing "hello\n".
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func echo(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func main() {
	port := "0"
	if len(os.Args) > 2 {
		port = os.Args[2]
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("ready %d\n", ln.Addr().(*net.TCPAddr).Port)
	if len(os.Args) > 1 && os.Args[1] == "http" {
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte("hello\n"))
		})
		http.Serve(ln, nil)
		return
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go echo(c)
	}
}
