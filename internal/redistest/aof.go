package redistest

import (
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Durable is a redis-server with an append-only file that fsyncs every
// write (appendonly yes, appendfsync always), which a test may kill with
// SIGKILL and start again on the same port and directory, as an operator's
// Redis restarts after a crash.
type Durable struct {
	// Addr is the server's host:port; it stays the same across restarts.
	Addr string
	// URL is the server's address as a redis:// URL selecting database 0.
	URL string

	bin, dir string
	port     int
	mu       sync.Mutex
	cur      *Server // nil while killed
}

// StartDurable runs a redis-server with an append-only file (fsync on every
// write) in a temporary directory of t, on a free port, and stops it when t
// ends. It fails t if the binary is missing; it never skips.
func StartDurable(t testing.TB) *Durable {
	t.Helper()
	d := &Durable{bin: serverBinary(t), dir: t.TempDir()}
	s, err := onFreePort(func(port int) (*Server, error) {
		d.port = port
		return d.launch()
	})
	if err != nil {
		t.Fatalf("redistest: redis-server with an append-only file did not start: %v", err)
	}
	d.Addr, d.URL, d.cur = s.Addr, s.URL, s
	t.Cleanup(d.Kill)
	return d
}

func (d *Durable) launch() (*Server, error) {
	return launch(d.bin, d.port, "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", d.dir)
}

// Kill kills the server with SIGKILL, as a crash would; what it had
// acknowledged is in its append-only file. It does nothing when the server
// is not running.
func (d *Durable) Kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != nil {
		d.cur.Stop()
		d.cur = nil
	}
}

// Restart starts the killed server again on the same port and directory; it
// loads its append-only file before it answers PING. It fails t if the
// server is running or does not come back.
func (d *Durable) Restart(t testing.TB) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != nil {
		t.Fatalf("redistest: Restart of the server at %s, which runs", d.Addr)
	}
	s, err := d.launch()
	if err != nil {
		t.Fatalf("redistest: restart the server at %s: %v", d.Addr, err)
	}
	d.cur = s
}

// Client returns a go-redis client of the server that is closed when t
// ends; it reconnects after a restart.
func (d *Durable) Client(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: d.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}
