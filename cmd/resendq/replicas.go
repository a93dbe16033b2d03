package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/rkey"
)

// exitReplicas is the exit status of an enqueue that reached the Redis
// master but fewer replicas than --redis-wait-replicas within
// --redis-wait-timeout: the resends are queued, and a failover before a
// replica has them would lose them.
const exitReplicas = 3

// replicaFlags make a producer wait for replicas of the Redis master
// (Redis WAIT) once its enqueue is written.
type replicaFlags struct {
	replicas int
	timeout  time.Duration
}

func (f *replicaFlags) register(fs *pflag.FlagSet) {
	fs.IntVar(&f.replicas, "redis-wait-replicas", 0, fmt.Sprintf("after each enqueue, wait until this many replicas of the Redis master have it (Redis WAIT), so that a failover cannot lose it; fewer within --redis-wait-timeout is an error (the command exits %d, the HTTP API answers 503) though the resend is queued on the master (0: no wait; not on Redis Cluster)", exitReplicas))
	fs.DurationVar(&f.timeout, "redis-wait-timeout", enqueue.DefaultWaitTimeout, "how long an enqueue waits for --redis-wait-replicas")
}

func (f *replicaFlags) validate() error {
	switch {
	case f.replicas < 0:
		return fmt.Errorf("--redis-wait-replicas %d: must be 0 (no wait) or more", f.replicas)
	case f.timeout <= 0:
		return fmt.Errorf("--redis-wait-timeout %s: must be positive", f.timeout)
	}
	return nil
}

// options sets the wait of opts.
func (f *replicaFlags) options(opts enqueue.Options) enqueue.Options {
	opts.WaitReplicas, opts.WaitTimeout = f.replicas, f.timeout
	return opts
}

// checkWaitClient refuses --redis-wait-replicas on a Redis Cluster before
// anything is enqueued: WAIT counts the replicas of one master.
func checkWaitClient(replicas int, rdb redis.UniversalClient) error {
	if replicas > 0 && rkey.IsCluster(rdb) {
		return usageErr(errors.New("--redis-wait-replicas: not available on Redis Cluster (WAIT counts the replicas of one master); nothing was enqueued"))
	}
	return nil
}

// replicasExit gives err exit status exitReplicas when it is (or holds) an
// *enqueue.ReplicasError, and returns it unchanged otherwise.
func replicasExit(err error) error {
	var re *enqueue.ReplicasError
	if errors.As(err, &re) {
		return &exitError{code: exitReplicas, err: err}
	}
	return err
}
