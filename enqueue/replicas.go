package enqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/rkey"
)

// DefaultWaitTimeout bounds the wait for replicas (Options.WaitReplicas)
// when Options.WaitTimeout is zero.
const DefaultWaitTimeout = time.Second

// ReplicasError is the error of an enqueue whose writes fewer replicas
// acknowledged than Options.WaitReplicas asked for within
// Options.WaitTimeout. The resends are on the Redis master and will be
// sent, unless the master fails before a replica has them and a replica
// takes its place: then they are lost. Enqueueing the same resends again
// is safe (the dedup window, batch and idempotency keys make a repeat
// enqueue nothing twice), and waits for the replicas again.
type ReplicasError struct {
	// Want is how many replicas were asked for, Acked how many
	// acknowledged within Timeout.
	Want, Acked int
	Timeout     time.Duration
}

func (e *ReplicasError) Error() string {
	return fmt.Sprintf("enqueued on the Redis master, but only %d of the %d replicas asked for acknowledged it within %s: "+
		"a failover now would lose it; enqueue it again once the replicas are back (no second email is sent)",
		e.Acked, e.Want, e.Timeout)
}

// replicaAckKey is the key a wait for replicas writes, so that Redis WAIT
// has a write of its own connection to wait for: replication keeps the
// order of writes, so a replica that has it has every earlier one.
const replicaAckKey = "replica-ack"

// waitReplicas returns nil at once when Options.WaitReplicas is not
// positive; otherwise it waits until that many replicas have every write
// Redis acknowledged so far (this Enqueuer's among them), and returns a
// *ReplicasError when fewer did within Options.WaitTimeout.
func (e *Enqueuer) waitReplicas(ctx context.Context) error {
	want := e.opts.WaitReplicas
	if want <= 0 {
		return nil
	}
	single, ok := singleClient(e.rdb)
	if !ok {
		return ErrWaitOnCluster
	}
	// WAIT counts the replicas that have the last write of its own
	// connection: this SET, and so everything written before it.
	conn := single.Conn()
	defer conn.Close()
	err := conn.Set(ctx, e.opts.KeyPrefix+replicaAckKey, "1", time.Minute).Err()
	var acked int64
	if err == nil {
		acked, err = conn.Wait(ctx, want, e.opts.WaitTimeout).Result()
	}
	if err != nil {
		return fmt.Errorf("enqueue: wait for %d replicas: %w", want, err)
	}
	if n := int(acked); n < want {
		return &ReplicasError{Want: want, Acked: n, Timeout: e.opts.WaitTimeout}
	}
	return nil
}

// ErrWaitOnCluster is the error of a wait for replicas (Options.WaitReplicas)
// on a Redis Cluster client: WAIT counts the replicas of one master.
var ErrWaitOnCluster = errors.New("enqueue: waiting for replicas needs a client of one Redis master (or of Sentinel), not of a Redis Cluster")

// singleClient returns the client of one Redis (or of the master a Sentinel
// names) that rdb is or wraps (rkey.Unwrapper), and false for anything
// else, a cluster client above all.
func singleClient(rdb redis.UniversalClient) (*redis.Client, bool) {
	for rdb != nil {
		if c, ok := rdb.(*redis.Client); ok {
			return c, true
		}
		u, ok := rdb.(rkey.Unwrapper)
		if !ok {
			return nil, false
		}
		rdb = u.Unwrap()
	}
	return nil, false
}
