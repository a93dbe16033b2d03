package outcome

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Get returns the outcome record of one task, if it has one.
func (s *Store) Get(ctx context.Context, taskID string) (Record, bool, error) {
	vals, err := s.rdb.HMGet(ctx, s.recordPrefix+taskID, "record", "attempts").Result()
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
