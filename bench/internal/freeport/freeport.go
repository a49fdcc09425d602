// Package freeport finds ports on 127.0.0.1 for the bench drivers' shell
// scripts (bench/soak.sh, bench/login.sh), which have no python3 to ask.
package freeport

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// Print writes n distinct ports on 127.0.0.1 that were free a moment ago to
// w, on one line. All n are held open together, so none repeats.
func Print(w io.Writer, n int) error {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ls = append(ls, l)
		out = append(out, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	_, err := fmt.Fprintln(w, strings.Join(out, " "))
	return err
}
