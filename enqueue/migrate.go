package enqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// MigrateSummary counts what Migrate moved.
type MigrateSummary struct {
	outcome.CopySummary
	// Keys counts the dedup claims, replay markers and idempotency keys
	// copied, each with what is left of its window.
	Keys int `json:"keys"`
	// Tasks counts the tasks waiting in the queues (pending, scheduled,
	// retrying) enqueued again on the destination under their IDs, and
	// AlreadyThere those it had.
	Tasks        int `json:"tasks"`
	AlreadyThere int `json:"tasks_already_there"`
}

// ErrWorkersRunning is Migrate's refusal to move a Redis that workers use.
var ErrWorkersRunning = errors.New("migrate: workers are running on the source Redis")

// migratePrefixes are the Enqueuer's own keys that Migrate copies.
var migratePrefixes = []string{"dedup:", "replayed:", "idem:"}

// Migrate copies everything resendq keeps in src's Redis into dst's: the
// outcome records with their replay marks and attempt histories (dst lays
// them out its own way, e.g. over a Redis Cluster's shards), the users'
// dedup claims, the replay markers and the idempotency keys (with what is
// left of their windows), and the tasks still waiting in the resend queues,
// under their own IDs. Dead letters are moved as records, from which `dlq
// replay` works; asynq's archive is not copied.
//
// It refuses, changing nothing, while a worker (an asynq server) is
// registered on src or a task runs there: stop the workers first. It may
// run again after it stopped half-way, or to catch what producers wrote
// meanwhile: records and keys are overwritten with the same, tasks dst has
// already are counted in AlreadyThere. The tasks stay in src: point the
// producers and workers at dst once it has run.
func Migrate(ctx context.Context, src, dst *Enqueuer, progress func(MigrateSummary)) (MigrateSummary, error) {
	var sum MigrateSummary
	if err := src.idle(); err != nil {
		return sum, err
	}
	report := func() {
		if progress != nil {
			progress(sum)
		}
	}
	cs, err := src.outcomes.CopyTo(ctx, dst.outcomes, func(c outcome.CopySummary) { sum.CopySummary = c; report() })
	sum.CopySummary = cs
	if err != nil {
		return sum, err
	}
	for _, p := range migratePrefixes {
		if err := src.copyKeys(ctx, dst, src.opts.KeyPrefix+p+"*", &sum); err != nil {
			return sum, err
		}
		report()
	}
	queues, err := src.queues()
	if err != nil {
		return sum, err
	}
	for _, q := range queues {
		if err := src.copyTasks(ctx, dst, q, &sum); err != nil {
			return sum, err
		}
		report()
	}
	return sum, nil
}

// idle reports ErrWorkersRunning when an asynq server is registered on the
// Enqueuer's Redis or a resend task is running there.
func (e *Enqueuer) idle() error {
	servers, err := e.ins.Servers()
	if err != nil {
		return fmt.Errorf("migrate: list the workers of the source: %w", err)
	}
	if len(servers) > 0 {
		return fmt.Errorf("%w (%d asynq servers, e.g. on host %s, pid %d): stop them first", ErrWorkersRunning, len(servers), servers[0].Host, servers[0].PID)
	}
	queues, err := e.queues()
	if err != nil {
		return err
	}
	for _, q := range queues {
		info, err := e.ins.GetQueueInfo(q)
		if err != nil {
			return fmt.Errorf("migrate: read queue %s of the source: %w", q, err)
		}
		if info.Active > 0 {
			return fmt.Errorf("%w: %d tasks of queue %s are running; stop the workers and wait for them", ErrWorkersRunning, info.Active, q)
		}
	}
	return nil
}

// queues returns the resend queues asynq knows of in the Enqueuer's Redis.
func (e *Enqueuer) queues() ([]string, error) {
	all, err := e.ins.Queues()
	if err != nil {
		return nil, fmt.Errorf("migrate: list the queues: %w", err)
	}
	var out []string
	for _, q := range resendQueues {
		if slices.Contains(all, q) {
			out = append(out, q)
		}
	}
	return out, nil
}

// copyKeys copies every key matching match, value and time to live, from
// the Enqueuer's Redis to dst's (DUMP and RESTORE, 500 keys a round trip).
func (e *Enqueuer) copyKeys(ctx context.Context, dst *Enqueuer, match string, sum *MigrateSummary) error {
	return scanKeys(ctx, e.rdb, match, func(keys []string) error {
		dumps := make([]*redis.StringCmd, len(keys))
		ttls := make([]*redis.DurationCmd, len(keys))
		_, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				dumps[i], ttls[i] = p.Dump(ctx, k), p.PTTL(ctx, k)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("migrate: read keys: %w", err)
		}
		n := 0
		_, err = dst.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				v, err := dumps[i].Result()
				ttl := ttls[i].Val()
				if err != nil || ttl == -2 {
					continue // gone since the scan
				}
				if ttl == -1 {
					ttl = 0
				}
				p.RestoreReplace(ctx, k, ttl, v)
				n++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("migrate: write keys: %w", err)
		}
		sum.Keys += n
		return nil
	})
}

// scanKeys calls fn with the keys matching match, a batch at a time: on a
// cluster, those of every master.
func scanKeys(ctx context.Context, rdb redis.UniversalClient, match string, fn func([]string) error) error {
	scan := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, match, 500).Result()
			if err != nil {
				return fmt.Errorf("migrate: scan %s: %w", match, err)
			}
			if len(keys) > 0 {
				if err := fn(keys); err != nil {
					return err
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if c, ok := rdb.(*redis.ClusterClient); ok {
		return c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return scan(ctx, m) })
	}
	return scan(ctx, rdb)
}

// copyTasks enqueues on dst, under their IDs, the tasks of queue waiting in
// the Enqueuer's Redis: pending ones at once, scheduled and retrying ones at
// their time.
func (e *Enqueuer) copyTasks(ctx context.Context, dst *Enqueuer, queue string, sum *MigrateSummary) error {
	lists := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		e.ins.ListPendingTasks, e.ins.ListScheduledTasks, e.ins.ListRetryTasks,
	}
	for _, list := range lists {
		for page := 1; ; page++ {
			infos, err := list(queue, asynq.PageSize(1000), asynq.Page(page))
			if err != nil {
				return fmt.Errorf("migrate: list the tasks of queue %s: %w", queue, err)
			}
			for _, info := range infos {
				opts := tasks.Options(queue, info.ID)
				if info.NextProcessAt.After(time.Now()) {
					opts = append(opts, asynq.ProcessAt(info.NextProcessAt))
				}
				_, err := dst.client.EnqueueContext(ctx, asynq.NewTask(info.Type, info.Payload), opts...)
				switch {
				case errors.Is(err, asynq.ErrTaskIDConflict):
					sum.AlreadyThere++
				case err != nil:
					return fmt.Errorf("migrate: enqueue task %s on the destination: %w", info.ID, err)
				default:
					sum.Tasks++
				}
			}
			if len(infos) < 1000 {
				break
			}
		}
	}
	return nil
}

// String is the summary in one line.
func (s MigrateSummary) String() string {
	return fmt.Sprintf("%d records (%d replayed, %d attempt histories), %d claims and markers, %d waiting tasks (%d there already)",
		s.Records, s.Replayed, s.Histories, s.Keys, s.Tasks, s.AlreadyThere)
}
