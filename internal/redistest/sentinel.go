package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnvSentinel names the environment variable that, when set, gives the path
// of the redis-sentinel binary to run; when unset the binary is looked up on
// PATH. A missing binary fails the test: `make test` installs it.
const EnvSentinel = "RESENDQ_REDIS_SENTINEL"

// MasterName is the name under which a Sentinel of StartSentinel monitors
// its master.
const MasterName = "resendq"

// Failover timing of a Sentinel of StartSentinel: the master counts as down
// after downAfter without an answer, and a failover goes on no longer than
// failoverTimeout, so that a test's failover takes a few seconds, yet longer
// than a client's retries within a 2 s timeout (as /readyz's) can hide.
const (
	downAfter       = 3 * time.Second
	failoverTimeout = 10 * time.Second
	sentinelTimeout = 20 * time.Second // how long the set-up waits for the replica and the Sentinel
)

// Sentinel is a master, its replica and a Sentinel monitoring them, each a
// process of its own on a free port, for one test.
type Sentinel struct {
	// Master and Replica are the two data servers. Master.Stop kills the
	// master (SIGKILL), as a crash would.
	Master, Replica *Server
	// Addr is the Sentinel's host:port.
	Addr string
	// URL reaches the master through the Sentinel, in the form
	// asynq.ParseRedisURI takes: redis-sentinel://host:port?master=NAME.
	URL string
}

// StartSentinel starts a master, a replica of it and a Sentinel for t, and
// returns once the replica has synced with the master and the Sentinel
// knows the replica, so that killing the master leads to a failover within
// a few seconds. Everything is stopped when t ends. It fails t if
// redis-server or redis-sentinel is missing (EnvServer, EnvSentinel); it
// never skips.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	sentinelBin := findBinary(t, EnvSentinel, "redis-sentinel")
	master := Start(t)
	replica := StartReplica(t, master)
	dir := t.TempDir()
	srv, err := onFreePort(func(port int) (*Server, error) {
		conf := filepath.Join(dir, "sentinel-"+strconv.Itoa(port)+".conf")
		if err := os.WriteFile(conf, []byte(sentinelConfig(master.Addr, dir)), 0o600); err != nil {
			return nil, fmt.Errorf("write the Sentinel's configuration: %w", err)
		}
		return launch(sentinelBin, port, conf)
	})
	if err != nil {
		t.Fatalf("redistest: redis-sentinel did not start: %v", err)
	}
	t.Cleanup(srv.Stop)
	s := &Sentinel{Master: master, Replica: replica, Addr: srv.Addr,
		URL: "redis-sentinel://" + srv.Addr + "?master=" + MasterName}
	s.waitForReplica(t)
	return s
}

// onFreePort calls start with a free port until it succeeds, startAttempts
// times at most (another process may take the port first), and returns its
// last error.
func onFreePort(start func(port int) (*Server, error)) (*Server, error) {
	var lastErr error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		s, err := start(port)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("%d attempts: %w", startAttempts, lastErr)
}

// sentinelConfig is the configuration of a Sentinel monitoring the master
// at masterAddr on its own (quorum 1), with short timeouts.
func sentinelConfig(masterAddr, dir string) string {
	host, port, _ := net.SplitHostPort(masterAddr)
	return fmt.Sprintf(`dir %s
sentinel monitor %s %s %s 1
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s %d
sentinel parallel-syncs %s 1
`, dir, MasterName, host, port, MasterName, downAfter.Milliseconds(), MasterName, failoverTimeout.Milliseconds(), MasterName)
}

// StartReplica starts a redis-server replicating master for t and returns
// once its link to the master is up and the initial sync is done.
func StartReplica(t testing.TB, master *Server) *Server {
	t.Helper()
	bin := serverBinary(t)
	host, masterPort, _ := net.SplitHostPort(master.Addr)
	// The master otherwise waits 5s for more replicas before a full sync.
	if err := master.Client(t).ConfigSet(context.Background(), "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatalf("redistest: CONFIG SET on the master: %v", err)
	}
	dir := t.TempDir()
	s, err := onFreePort(func(port int) (*Server, error) {
		return startProcess(bin, dir, port, "--replicaof", host, masterPort)
	})
	if err != nil {
		t.Fatalf("redistest: the replica did not start: %v", err)
	}
	t.Cleanup(s.Stop)
	waitAcknowledging(t, master)
	return s
}

// waitAcknowledging waits until a replica of master acknowledges writes:
// for a second after its sync it may answer WAIT only on its own schedule.
// It leaves no key behind.
func waitAcknowledging(t testing.TB, master *Server) {
	t.Helper()
	ctx := context.Background()
	conn := master.Client(t).Conn()
	defer conn.Close()
	const key = "redistest:replica-ready"
	if err := conn.Set(ctx, key, "1", 0).Err(); err != nil {
		t.Fatalf("redistest: SET on the master: %v", err)
	}
	if err := conn.Del(ctx, key).Err(); err != nil {
		t.Fatalf("redistest: DEL on the master: %v", err)
	}
	if n, err := conn.Wait(ctx, 1, sentinelTimeout).Result(); err != nil || n < 1 {
		t.Fatalf("redistest: WAIT for the replica: %d, %v; want its acknowledgement within %s", n, err, sentinelTimeout)
	}
}

// waitForReplica waits until the Sentinel has discovered the replica.
func (s *Sentinel) waitForReplica(t testing.TB) {
	t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
	defer sc.Close()
	waitFor(t, sentinelTimeout, "the Sentinel to discover the replica", func(ctx context.Context) (bool, error) {
		replicas, err := sc.Replicas(ctx, MasterName).Result()
		return err == nil && len(replicas) == 1, err
	})
}

// CurrentMaster returns the address the Sentinel gives for the master now.
func (s *Sentinel) CurrentMaster(ctx context.Context) (string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
	defer sc.Close()
	hp, err := sc.GetMasterAddrByName(ctx, MasterName).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("the Sentinel answered %q for the master's address", hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// WaitFailover waits up to within for the Sentinel to have promoted the
// replica and for the replica to act as a master, and fails t otherwise.
func (s *Sentinel) WaitFailover(t testing.TB, within time.Duration) {
	t.Helper()
	rdb := s.Replica.Client(t)
	waitFor(t, within, "the Sentinel to promote the replica", func(ctx context.Context) (bool, error) {
		addr, err := s.CurrentMaster(ctx)
		if err != nil || addr != s.Replica.Addr {
			return false, err
		}
		info, err := rdb.Info(ctx, "replication").Result()
		return err == nil && infoField(info, "role") == "master", err
	})
}

// waitFor polls cond every 20ms until it holds, and fails t with what it
// waited for and cond's last error when within has passed.
func waitFor(t testing.TB, within time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ok, err := cond(ctx)
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: timed out after %s waiting for %s (last error: %v)", within, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// infoField returns the value of field in the text of an INFO reply.
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSuffix(line, "\r"), field+":"); ok {
			return v
		}
	}
	return ""
}
