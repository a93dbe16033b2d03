package outcome

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Get returns the outcome record of one task, if it has one.
func (s *Store) Get(ctx context.Context, taskID string) (Record, bool, error) {
	vals, err := s.rdb.HMGet(ctx, s.RecordKey(taskID), "record", "attempts").Result()
	if errors.Is(err, redis.Nil) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("outcome: record of task %s: %w", taskID, err)
	}
	body, ok := vals[0].(string)
	if !ok {
		return Record{}, false, nil
	}
	attempts, _ := vals[1].(string)
	rec, err := decode(body, attempts)
	return rec, err == nil, err
}

// Validate reports what is wrong with f, as List would, without asking
// Redis; the error wraps ErrInvalid and names the field.
func (f Filter) Validate() error {
	_, err := f.normalize()
	return err
}

// Exist reports, for each of taskIDs in order, whether the task has an
// outcome record, in one round trip.
func (s *Store) Exist(ctx context.Context, taskIDs []string) ([]bool, error) {
	cmds := make([]*redis.IntCmd, len(taskIDs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range taskIDs {
			cmds[i] = p.Exists(ctx, s.RecordKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outcome: look up records: %w", err)
	}
	out := make([]bool, len(taskIDs))
	for i, c := range cmds {
		out[i] = c.Val() > 0
	}
	return out, nil
}
