package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// machine describes where the figures were taken.
type machine struct {
	date   string
	cpus   int
	model  string
	memory string
	kernel string
	goVer  string
	redis  string
	load   string
	// neighbour is the share of one core a busy neighbour took over the
	// runs (-neighbour); 0: none.
	neighbour float64
}

func describeMachine(ctx context.Context, rdb *redis.Client) machine {
	m := machine{
		date:  time.Now().UTC().Format("2006-01-02 15:04 MST"),
		cpus:  runtime.NumCPU(),
		goVer: runtime.Version(),
		model: "unknown",
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		m.memory = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if info, err := rdb.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
				m.redis = "Redis " + v
			}
		}
	}
	return m
}

func (m machine) text() string {
	return fmt.Sprintf("machine: %d cores (%s), %s, %s; %s; %s; load average %s before the runs%s; %s",
		m.cpus, m.model, m.memory, m.kernel, m.goVer, m.redis, m.load, m.neighbourText(), m.date)
}

// neighbourText says, when -neighbour was set, what the runs shared the
// machine with.
func (m machine) neighbourText() string {
	if m.neighbour == 0 {
		return ""
	}
	return fmt.Sprintf(", beside a busy neighbour taking %g of one core (-neighbour)", m.neighbour)
}
