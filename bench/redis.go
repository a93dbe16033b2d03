package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is the throw-away redis-server of one benchmark run.
type redisServer struct {
	addr string
	url  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis runs bin on a free port of 127.0.0.1 with persistence off and
// waits until it answers PING.
func startRedis(bin, dir string) (*redisServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return startRedisOn(bin, dir, port)
}

// startRedisOn is startRedis on port, with extra arguments.
func startRedisOn(bin, dir string, port int, extra ...string) (*redisServer, error) {
	cmd := exec.Command(bin, append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--loglevel", "warning"}, extra...)...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	s := &redisServer{addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd, done: make(chan struct{})}
	s.url = "redis://" + s.addr + "/0"
	go func() { _ = cmd.Wait(); close(s.done) }()
	rdb := redis.NewClient(&redis.Options{Addr: s.addr})
	defer rdb.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if rdb.Ping(context.Background()).Err() == nil {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, errors.New("redis-server exited while starting")
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, errors.New("redis-server did not answer PING within 10s")
		}
	}
}

func (s *redisServer) stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// redisBinary is RESENDQ_REDIS_SERVER, or redis-server on PATH.
func redisBinary() (string, error) {
	if p := os.Getenv("RESENDQ_REDIS_SERVER"); p != "" {
		return p, nil
	}
	return exec.LookPath("redis-server")
}

// redisStats is what Redis says of the work it did, read with INFO.
type redisStats struct {
	calls  map[string]int64 // INFO commandstats: calls per command, script-internal ones included
	usec   map[string]int64 // INFO commandstats: µs spent per command
	reads  int64            // total_reads_processed: read events on client sockets
	cpu    float64          // used_cpu_user + used_cpu_sys, seconds
	memory int64            // used_memory, bytes
}

func readStats(ctx context.Context, rdb *redis.Client) (redisStats, error) {
	info, err := rdb.Info(ctx, "commandstats", "stats", "cpu", "memory").Result()
	if err != nil {
		return redisStats{}, err
	}
	st := redisStats{calls: map[string]int64{}, usec: map[string]int64{}}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(k, "cmdstat_"):
			// calls=12,usec=34,...
			for _, f := range strings.Split(v, ",") {
				if n, ok := strings.CutPrefix(f, "calls="); ok {
					c, _ := strconv.ParseInt(n, 10, 64)
					st.calls[strings.TrimPrefix(k, "cmdstat_")] = c
				}
				if n, ok := strings.CutPrefix(f, "usec="); ok {
					c, _ := strconv.ParseInt(n, 10, 64)
					st.usec[strings.TrimPrefix(k, "cmdstat_")] = c
				}
			}
		case k == "total_reads_processed":
			st.reads, _ = strconv.ParseInt(v, 10, 64)
		case k == "used_memory":
			st.memory, _ = strconv.ParseInt(v, 10, 64)
		case k == "used_cpu_user", k == "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			st.cpu += f
		}
	}
	return st, nil
}

// redisWork is the work Redis did between two snapshots for everyone but
// the driver itself.
type redisWork struct {
	perCmd   map[string]int64 // calls per command
	usec     map[string]int64 // µs per command
	commands int64            // commands, script-internal ones included
	scripts  int64            // EVAL and EVALSHA calls
	reads    int64            // read events on client sockets: about one per round trip
	cpu      float64          // seconds
}

func diffStats(before, after redisStats, own *ownCommands) redisWork {
	w := redisWork{perCmd: map[string]int64{}, usec: map[string]int64{}}
	ownCalls, ownTotal := own.snapshot()
	for name, n := range after.calls {
		d := n - before.calls[name] - ownCalls[name]
		if name == "info" {
			continue
		}
		w.commands += d
		if d != 0 {
			w.perCmd[name] = d
			w.usec[name] = after.usec[name] - before.usec[name]
		}
		if name == "evalsha" || name == "eval" {
			w.scripts += d
		}
	}
	w.reads = after.reads - before.reads - ownTotal
	w.cpu = after.cpu - before.cpu
	return w
}

// ownCommands counts the commands the driver's own client sends (a go-redis
// hook), so that its polling is not charged to the worker under test.
type ownCommands struct {
	mu    sync.Mutex
	calls map[string]int64
	total int64
}

func (o *ownCommands) reset() {
	o.mu.Lock()
	o.calls, o.total = map[string]int64{}, 0
	o.mu.Unlock()
}

func (o *ownCommands) snapshot() (map[string]int64, int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := make(map[string]int64, len(o.calls))
	for k, v := range o.calls {
		c[k] = v
	}
	return c, o.total
}

func (o *ownCommands) DialHook(next redis.DialHook) redis.DialHook { return next }

func (o *ownCommands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		o.mu.Lock()
		if o.calls != nil {
			o.calls[strings.ToLower(cmd.Name())]++
			o.total++
		}
		o.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (o *ownCommands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// perTask lists the commands per task and the Redis time they took (µs
// per task, script-internal commands included in their own line and in
// their script's), for -v.
func (w redisWork) perTask(tasks int) string {
	names := make([]string, 0, len(w.perCmd))
	for name := range w.perCmd {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		fmt.Fprintf(&b, "    %-16s %6.2f calls %7.2f µs\n", name, float64(w.perCmd[name])/float64(tasks), float64(w.usec[name])/float64(tasks))
	}
	return b.String()
}
