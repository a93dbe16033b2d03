package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/tasks"
)

// The Redis Cluster figure: the same batch and the same drain on one Redis
// node and on a 3-master Redis Cluster of the same machine, in the same run.
const (
	sideNode    = "one node"
	sideCluster = "cluster"

	clusterDocBegin = "<!-- begin: the Redis Cluster figure, written by `make bench` (bench/cluster.go) -->"
	clusterDocEnd   = "<!-- end: the Redis Cluster figure -->"
	clusterMasters  = 3
)

// clusterRun is one run of one side of the cluster figure.
type clusterRun struct {
	enqueue float64 // rows/s of `resendq enqueue --file`, process start to exit
	drain   float64 // tasks/s of a worker, process start to the bulk queue's processed counter at N
	cpu     float64 // Redis CPU per task over the batch and the drain, µs, all nodes
	cmds    float64 // Redis commands per task over the batch and the drain, all nodes
	memory  float64 // bytes of Redis memory per task left after the drain (its outcome record), all nodes
	queued  float64 // bytes of Redis memory per task waiting in the queue after the batch, all nodes
	records []int64 // outcome records per master after the drain (cluster only)
}

// clusterFigure times, runs times on each side, `resendq enqueue --file` of
// rows users into the bulk queue and then a worker (concurrency 50, zero
// API latency) draining them, both as processes timed as a user sees them.
func (e *env) clusterFigure(ctx context.Context, runs, rows int, res *results) error {
	bin, err := redisBinary()
	if err != nil {
		return err
	}
	c, err := startBenchCluster(bin, filepath.Join(e.tmp, "cluster"))
	if err != nil {
		return fmt.Errorf("start a Redis Cluster: %w", err)
	}
	defer c.stop()
	file := filepath.Join(e.tmp, "cluster-users.csv")
	if err := writeUsers(file, rows); err != nil {
		return err
	}
	res.clusterRows = rows
	res.cluster = map[string][]clusterRun{}
	for i := range runs {
		sides := []string{sideNode, sideCluster}
		if i%2 == 1 {
			sides = []string{sideCluster, sideNode}
		}
		for _, side := range sides {
			nodes, url := []*redis.Client{e.rdb}, e.redis.url
			if side == sideCluster {
				nodes, url = c.nodes, c.url
			}
			r, err := e.clusterRun(ctx, nodes, url, file, rows)
			if err != nil {
				return fmt.Errorf("%s: %w", side, err)
			}
			res.cluster[side] = append(res.cluster[side], r)
			fmt.Printf("run %d %-9s batch %6.0f rows/s  drain %6.0f tasks/s  Redis per task: %5.1f µs CPU, %4.1f commands, %4.0f bytes queued, %4.0f bytes kept  records per master %v\n",
				i+1, side, r.enqueue, r.drain, r.cpu, r.cmds, r.queued, r.memory, r.records)
		}
	}
	return nil
}

// clusterRun empties every node, then enqueues file and drains it.
func (e *env) clusterRun(ctx context.Context, nodes []*redis.Client, url, file string, rows int) (clusterRun, error) {
	for _, n := range nodes {
		if err := n.FlushAll(ctx).Err(); err != nil {
			return clusterRun{}, err
		}
	}
	e.api.latency.Store(0)
	e.api.calls.Store(0)
	before, err := sumStats(ctx, nodes)
	if err != nil {
		return clusterRun{}, err
	}
	var r clusterRun
	cmd := exec.CommandContext(ctx, e.ours, "enqueue", "--file", file, "--redis-url", url, "--json", "--no-progress")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return r, fmt.Errorf("resendq enqueue --file: %v: %s", err, strings.TrimSpace(string(out)))
	}
	r.enqueue = float64(rows) / time.Since(start).Seconds()
	if mid, err := sumStats(ctx, nodes); err == nil {
		r.queued = float64(mid.memory-before.memory) / float64(rows)
	}

	logPath := filepath.Join(e.tmp, "cluster-worker.log")
	start = time.Now()
	p, err := startProcess(exec.Command(e.ours, "worker", "--redis-url", url, "--api-base", e.api.base, "--concurrency", "50"), logPath)
	if err != nil {
		return r, err
	}
	defer p.stop()
	// asynq's counter lives on the node of the queue's hash tag.
	key := processedKey(tasks.QueueBulk)
	var counter *redis.Client
	for _, n := range nodes {
		if len(nodes) == 1 || n.Exists(ctx, "asynq:{"+tasks.QueueBulk+"}:pending").Val() == 1 {
			counter = n
		}
	}
	if counter == nil {
		return r, errors.New("no node holds the bulk queue")
	}
	for deadline := time.Now().Add(5 * time.Minute); ; {
		got, err := counter.Get(ctx, key).Int64()
		if err != nil && err != redis.Nil {
			return r, err
		}
		if got >= int64(rows) {
			break
		}
		select {
		case <-p.exited:
			return r, fmt.Errorf("the worker exited after %d of %d tasks (log: %s)", got, rows, logPath)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%d of %d tasks after 5 minutes (log: %s)", got, rows, logPath)
		}
	}
	r.drain = float64(rows) / time.Since(start).Seconds()
	if err := p.stop(); err != nil {
		return r, fmt.Errorf("the worker did not stop cleanly: %w (log: %s)", err, logPath)
	}
	if calls := e.api.calls.Load(); calls != int64(rows) {
		return r, fmt.Errorf("the API got %d calls for %d tasks", calls, rows)
	}
	after, err := sumStats(ctx, nodes)
	if err != nil {
		return r, err
	}
	r.cpu = (after.cpu - before.cpu) / float64(rows) * 1e6
	r.cmds = float64(after.commands-before.commands) / float64(rows)
	r.memory = float64(after.memory-before.memory) / float64(rows)
	if len(nodes) > 1 {
		var total int64
		for _, n := range nodes {
			keys, err := n.Keys(ctx, "resendq:{o*}:outcome:*").Result()
			if err != nil {
				return r, err
			}
			r.records = append(r.records, int64(len(keys)))
			total += int64(len(keys))
		}
		if total != int64(rows) {
			return r, fmt.Errorf("%d outcome records on the masters for %d tasks", total, rows)
		}
	}
	return r, nil
}

// nodeTotals are the CPU and commands of a set of Redis nodes.
type nodeTotals struct {
	cpu      float64
	commands int64
	memory   int64 // used_memory, bytes
}

func sumStats(ctx context.Context, nodes []*redis.Client) (nodeTotals, error) {
	var t nodeTotals
	for _, n := range nodes {
		st, err := readStats(ctx, n)
		if err != nil {
			return t, err
		}
		t.cpu += st.cpu
		t.memory += st.memory
		for _, c := range st.calls {
			t.commands += c
		}
	}
	return t, nil
}

// benchCluster is a throw-away Redis Cluster of clusterMasters masters.
type benchCluster struct {
	servers []*redisServer
	nodes   []*redis.Client
	url     string
}

// startBenchCluster runs clusterMasters cluster-enabled redis-servers on
// free ports whose bus ports (+10000) are free too, and joins them.
func startBenchCluster(bin, dir string) (*benchCluster, error) {
	c := &benchCluster{}
	var addrs []string
	for i := 0; len(c.servers) < clusterMasters; i++ {
		if i > 50 {
			c.stop()
			return nil, errors.New("no free ports for the cluster")
		}
		port, ok := clusterPort()
		if !ok {
			continue
		}
		d := filepath.Join(dir, strconv.Itoa(port))
		if err := os.MkdirAll(d, 0o700); err != nil {
			c.stop()
			return nil, err
		}
		s, err := startRedisOn(bin, d, port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
		if err != nil {
			c.stop()
			return nil, err
		}
		c.servers = append(c.servers, s)
		c.nodes = append(c.nodes, redis.NewClient(&redis.Options{Addr: s.addr}))
		addrs = append(addrs, s.addr)
	}
	cli := filepath.Join(filepath.Dir(bin), "redis-cli")
	args := append([]string{"--cluster", "create"}, addrs...)
	if out, err := exec.Command(cli, append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput(); err != nil {
		c.stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %v: %s", err, out)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		ok := true
		for _, n := range c.nodes {
			info := n.ClusterInfo(context.Background()).Val()
			ok = ok && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_assigned:16384")
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, errors.New("the cluster did not become ok within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.url = "redis-cluster://" + strings.Join(addrs, ",")
	return c, nil
}

// clusterPort returns a free port whose bus port is free too.
func clusterPort() (int, bool) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, false
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if port+10000 > 65535 {
		return 0, false
	}
	bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
	if err != nil {
		return 0, false
	}
	bus.Close()
	return port, true
}

func (c *benchCluster) stop() {
	for _, n := range c.nodes {
		n.Close()
	}
	for _, s := range c.servers {
		s.stop()
	}
}

// clusterMarkdown is the cluster figure's part of docs/BENCHMARKS.md.
func (r *results) clusterMarkdown() string {
	var b strings.Builder
	b.WriteString(clusterDocBegin + "\n")
	b.WriteString("## Redis Cluster: results\n\n")
	n, c := r.cluster[sideNode], r.cluster[sideCluster]
	fmt.Fprintf(&b, "Measured %s on the machine above. %s distinct users: `resendq enqueue --file` into the bulk queue "+
		"(timed from the process's start to its exit), then `resendq worker --concurrency 50` draining them against a "+
		"zero-latency API (timed from the worker's start until asynq's processed counter of the queue reaches N). "+
		"On one Redis node, and on a Redis Cluster of %d masters on the same machine (`redis-cluster://`), "+
		"the two taking turns at going first. Redis CPU and commands are summed over every node, batch and drain together; "+
		"memory is `used_memory` after the batch, and after the drain, less after the flush before the batch, summed over every node. "+
		"Each figure is the median of %d runs; each ratio the median of the ratios taken within one run.\n\n",
		r.machine.date, count(r.clusterRows), clusterMasters, len(n))
	b.WriteString("| figure | one node | cluster | cluster / one node |\n| --- | ---: | ---: | ---: |\n")
	for _, f := range []struct {
		name, format string
		get          func(clusterRun) float64
	}{
		{"batch enqueue, rows/s", "%.0f", func(x clusterRun) float64 { return x.enqueue }},
		{"bulk drain, tasks/s", "%.0f", func(x clusterRun) float64 { return x.drain }},
		{"Redis CPU per task, µs, all nodes", "%.1f", func(x clusterRun) float64 { return x.cpu }},
		{"Redis commands per task, all nodes", "%.1f", func(x clusterRun) float64 { return x.cmds }},
		{"Redis memory per task waiting in the queue after the batch (asynq's task and the user's dedup claim), bytes, all nodes", "%.0f", func(x clusterRun) float64 { return x.queued }},
		{"Redis memory per task kept after the drain (its outcome record and index entries), bytes, all nodes", "%.0f", func(x clusterRun) float64 { return x.memory }},
	} {
		fmt.Fprintf(&b, "| %s | "+f.format+" | "+f.format+" | %.2f |\n", f.name, medianOf(n, f.get), medianOf(c, f.get), medianRatio(c, n, f.get))
	}
	b.WriteString("\n<details><summary>Every run</summary>\n\n| run | side | batch rows/s | drain tasks/s | Redis µs/task | commands/task | records per master |\n| ---: | --- | ---: | ---: | ---: | ---: | --- |\n")
	for i := range n {
		for _, side := range []string{sideNode, sideCluster} {
			x := r.cluster[side][i]
			recs := "–"
			if len(x.records) > 0 {
				recs = strings.Trim(fmt.Sprint(x.records), "[]")
			}
			fmt.Fprintf(&b, "| %d | %s | %.0f | %.0f | %.1f | %.1f | %s |\n", i+1, side, x.enqueue, x.drain, x.cpu, x.cmds, recs)
		}
	}
	b.WriteString("\n</details>\n")
	b.WriteString(clusterDocEnd + "\n")
	return b.String()
}
