package enqueue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
)

// batchLockTTL is how long a batch's lock outlives a run that stops
// renewing it (a crash, kill -9); a running batch renews it every third.
const batchLockTTL = 30 * time.Second

// renewTimeout bounds one renewal of a batch's lock.
const renewTimeout = batchLockTTL / 6

// BatchBusyError is returned by EnqueueBatch when another run of the same
// batch ID holds the batch's lock: two runs at once could race each other
// into sending a user two emails.
type BatchBusyError struct {
	// BatchID is the batch's ID.
	BatchID string
	// Holder describes the other run: host, process ID and start time.
	Holder string
	// RetryIn is how long the lock stays taken if the other run is gone.
	RetryIn time.Duration
}

func (e *BatchBusyError) Error() string {
	return fmt.Sprintf("batch %s is being enqueued by another run (%s); if that run is gone, its lock expires in %s",
		e.BatchID, e.Holder, e.RetryIn.Round(time.Second))
}

// unlockScript frees the lock if it still holds the given token.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// renewScript extends the lock if it still holds the given token.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

// lockBatch takes the lock of batchID and keeps renewing it until the
// returned function releases it. Losing the lock (another run took it, or
// Redis could not renew it before it expired) is reported to lost. The
// release function reports a lock it could not release: it then expires
// within batchLockTTL.
func (e *Enqueuer) lockBatch(ctx context.Context, batchID string, lost func(error)) (func() error, error) {
	key := e.opts.KeyPrefix + "batch-lock:" + batchID
	clock := e.opts.Clock
	host, _ := os.Hostname()
	token := fmt.Sprintf("host %s, pid %d, started %s", host, os.Getpid(), clock.Now().UTC().Format(time.RFC3339))
	ok, err := e.rdb.SetNX(ctx, key, token, batchLockTTL).Result()
	if err != nil {
		return nil, fmt.Errorf("take the lock of batch %s: %w", batchID, err)
	}
	if !ok {
		busy := &BatchBusyError{BatchID: batchID, Holder: "unknown", RetryIn: batchLockTTL}
		if holder, err := e.rdb.Get(ctx, key).Result(); err == nil {
			busy.Holder = holder
		}
		if ttl, err := e.rdb.PTTL(ctx, key).Result(); err == nil && ttl > 0 {
			busy.RetryIn = ttl
		}
		return nil, busy
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := clock.NewTicker(batchLockTTL / 3)
		defer t.Stop()
		renewed := clock.Now()
		for {
			select {
			case <-stop:
				return
			case <-t.Chan():
				// The lock runs from before the renewal at least; should it
				// fail, the run stops while the lock still holds, before the
				// next renewal would come too late.
				start := clock.Now()
				rctx, cancel := context.WithTimeout(context.Background(), renewTimeout)
				n, err := renewScript.Run(rctx, e.rdb, []string{key}, token, batchLockTTL.Milliseconds()).Int()
				cancel()
				switch {
				case err == nil && n == 0:
					lost(errors.New("the batch's lock was lost to another run; stopped"))
					return
				case err == nil:
					renewed = start
				case clock.Since(renewed)+batchLockTTL/3 >= batchLockTTL:
					lost(fmt.Errorf("the batch's lock could not be renewed for %s and may have passed to another run; stopped: %w", batchLockTTL, err))
					return
				}
			}
		}
	}()
	return func() error {
		close(stop)
		<-done
		err := e.tryAgain(func() error {
			return unlockScript.Run(context.Background(), e.rdb, []string{key}, token).Err()
		})
		if err != nil {
			return fmt.Errorf("the lock of batch %s was not released; it expires within %s: %w", batchID, batchLockTTL, err)
		}
		return nil
	}, nil
}
