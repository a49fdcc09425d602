package redistest

import (
	"syscall"
	"testing"
)

// Pause stops the server's process with SIGSTOP: it keeps its connections
// and its port, and answers nothing, as a hung Redis does. Resume it with
// Resume; a paused server is resumed when the test ends, so it can be
// stopped.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGSTOP)
	t.Cleanup(func() { s.signalQuietly(syscall.SIGCONT) })
}

// Resume continues a server stopped by Pause.
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGCONT)
}

func (s *Server) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := s.signalQuietly(sig); err != nil {
		t.Fatalf("redistest: %v to %s: %v", sig, s.Addr, err)
	}
}

func (s *Server) signalQuietly(sig syscall.Signal) error {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	return cmd.Process.Signal(sig)
}
