package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of real redis-server processes that lives for
// one test: every node is a master holding an equal share of the slots.
type Cluster struct {
	// Addrs are the nodes' host:port, in slot order: Addrs[0] holds the
	// lowest slots.
	Addrs []string
	// URL reaches the cluster: redis-cluster://host:port,host:port,...
	URL string

	nodes []*Server
}

// clusterReadyTimeout bounds how long the joined cluster may take to agree.
const clusterReadyTimeout = 30 * time.Second

// StartCluster runs masters cluster-enabled redis-server processes on free
// ports (each also listens on its port + 10000 for the cluster bus), joins
// them with `redis-cli --cluster create` and waits until every node reports
// cluster_state:ok. It fails t if redis-server or redis-cli is missing; it
// never skips.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("redistest: a Redis Cluster needs at least 3 masters, not %d", masters)
	}
	bin := serverBinary(t)
	cli := filepath.Join(filepath.Dir(bin), "redis-cli")
	if _, err := exec.LookPath(cli); err != nil {
		if cli, err = exec.LookPath("redis-cli"); err != nil {
			t.Fatalf("redistest: redis-cli not found beside %s nor on PATH; `make test` installs it", bin)
		}
	}
	c := &Cluster{}
	for i := range masters {
		dir := filepath.Join(t.TempDir(), "node"+strconv.Itoa(i))
		s, err := startClusterNode(bin, dir)
		if err != nil {
			t.Fatalf("redistest: cluster node %d: %v", i, err)
		}
		t.Cleanup(s.Stop)
		c.nodes = append(c.nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitOK(); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	c.URL = "redis-cluster://" + strings.Join(c.Addrs, ",")
	return c
}

// startClusterNode starts one cluster-enabled node on a port whose bus port
// (+10000) is free too.
func startClusterNode(bin, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var lastErr error
	for range startAttempts * 4 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		if port+10000 > 65535 || !portFree(port+10000) {
			continue
		}
		s, err := startProcess(bin, dir, port,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000")
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("no node started: %v", lastErr)
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// waitOK polls every node until all report cluster_state:ok and agree on
// the full slot map.
func (c *Cluster) waitOK() error {
	ctx := context.Background()
	deadline := time.Now().Add(clusterReadyTimeout)
	for {
		var notOK string
		for _, addr := range c.Addrs {
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			info, err := rdb.ClusterInfo(ctx).Result()
			rdb.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_assigned:16384") {
				notOK = addr
				break
			}
		}
		if notOK == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster node %s not ok after %s", notOK, clusterReadyTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Client returns a cluster client of c that is closed when t ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Node returns a single-node client of the i-th master (in slot order), to
// see what one master holds.
func (c *Cluster) Node(t testing.TB, i int) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: c.Addrs[i]})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Stop stops the i-th master (in slot order) for good, as a crash would
// leave it: the slots it holds go unserved.
func (c *Cluster) Stop(i int) { c.nodes[i].Stop() }
