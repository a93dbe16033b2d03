// Package redistest starts throw-away Redis servers for tests.
//
// Start runs a real redis-server child process on a free port of 127.0.0.1,
// with persistence off and its working directory in the test's temporary
// directory, and stops it when the test ends. Each test gets its own server,
// so tests may run in parallel and never see each other's keys.
//
// The redis-server binary is taken from the RESENDQ_REDIS_SERVER environment
// variable, or else found on PATH. A missing binary fails the test: `make test`
// installs it. StartEmbedded runs the embedded Redis of `resendq dev`
// (package memredis) instead, for tests of that mode.
package redistest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/memredis"
)

// EnvServer names the environment variable that, when set, gives the path of
// the redis-server binary to run; when unset the binary is looked up on PATH.
const EnvServer = "RESENDQ_REDIS_SERVER"

const (
	startAttempts = 5                    // ports tried before giving up
	readyTimeout  = 10 * time.Second     // how long a server may take to answer PING
	pollInterval  = 5 * time.Millisecond // how often PING is tried while starting
	stopTimeout   = 5 * time.Second      // how long Stop waits for the process to exit
)

// Server is a Redis server that lives for one test.
type Server struct {
	// Addr is the server's host:port, e.g. "127.0.0.1:41234".
	Addr string
	// URL is the server's address as a redis:// URL selecting database 0.
	URL string

	stopOnce sync.Once
	stop     func()
}

// Start runs a redis-server process for t on a free local port, waits until it
// answers PING and stops it when t ends. It fails t if the binary is missing or
// the server does not come up within 10 seconds; it never skips.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := serverBinary(t)
	dir := t.TempDir()
	var lastErr error
	for range startAttempts {
		s, err := startProcess(bin, dir, 0)
		if err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		lastErr = err
	}
	t.Fatalf("redistest: redis-server did not start after %d attempts: %v", startAttempts, lastErr)
	return nil
}

// serverBinary returns the redis-server to run or fails t with a hint.
func serverBinary(t testing.TB) string {
	t.Helper()
	return findBinary(t, EnvServer, "redis-server")
}

// findBinary returns the path in the environment variable env, else name
// found on PATH, or fails t with a hint.
func findBinary(t testing.TB, env, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("redistest: %s=%q: %v", env, p, err)
		}
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("redistest: %s not found on PATH and %s is unset; "+
			"run `make test`, which installs it, or set %s to its path", name, env, env)
	}
	return p
}

// startProcess runs one redis-server on a fresh free port and waits for it;
// extra arguments follow the harness's own. A port of 0 picks a free one.
func startProcess(bin, dir string, port int, extra ...string) (*Server, error) {
	if port == 0 {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		port = p
	}
	return launch(bin, port, append([]string{"--save", "", "--appendonly", "no", "--dir", dir}, extra...)...)
}

// launch runs bin with args on 127.0.0.1:port, in the foreground, and waits
// until it answers PING. Stopping the Server kills the process (SIGKILL).
func launch(bin string, port int, args ...string) (*Server, error) {
	var out syncBuffer
	args = append(args, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--daemonize", "no")
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	kill := func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(stopTimeout):
		}
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitReady(addr, exited); err != nil {
		kill()
		return nil, fmt.Errorf("%w; %s output:\n%s", err, bin, out.String())
	}
	return &Server{Addr: addr, URL: "redis://" + addr + "/0", stop: kill}, nil
}

// freePort asks the kernel for an unused TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls addr with PING until it answers, the process exits or the
// deadline passes.
func waitReady(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("the server exited while starting")
		default:
		}
		if err = ping(addr); err == nil {
			return nil
		}
		time.Sleep(pollInterval)
	}
	return fmt.Errorf("the server at %s did not answer PING within %s: %v", addr, readyTimeout, err)
}

// ping sends one inline PING over a fresh connection and checks for +PONG.
// It avoids a client library so that a refused dial fails at once, unlogged.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	reply := make([]byte, 7)
	if _, err := io.ReadFull(conn, reply); err != nil {
		return err
	}
	if string(reply) != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", reply)
	}
	return nil
}

// Client returns a go-redis client of the server that is closed when t ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Stop stops the server, e.g. to test what happens when Redis goes away.
// It is safe to call more than once; later calls do nothing.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.stop != nil {
			s.stop()
		}
	})
}

// StartEmbedded runs the embedded Redis of `resendq dev` (package memredis)
// for t, and closes it when t ends.
func StartEmbedded(t testing.TB) *Server {
	t.Helper()
	m, err := memredis.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s := &Server{Addr: m.Addr(), URL: m.URL(), stop: m.Close}
	t.Cleanup(s.Stop)
	return s
}

// syncBuffer is a bytes.Buffer that a process may write while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
