package outcome

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// CopySummary counts what CopyTo wrote.
type CopySummary struct {
	// Records counts the records written to the other store.
	Records int `json:"records"`
	// Replayed counts those marked replayed there, as they were here.
	Replayed int `json:"replayed"`
	// Histories counts the attempt histories copied with them.
	Histories int `json:"histories"`
}

// CopyTo writes every record of s into dst, a store in another Redis (e.g.
// a Redis Cluster, whose layout differs), as they are: the same fields,
// finished_at and attempts, replay marks and attempt histories; dst builds
// its own indexes and counts. It reads a page of up to 1,000 records at a
// time, newest first, so it holds little in memory. A record dst has
// already is replaced by the copy, counted once: running it again after it
// stopped half-way is safe. Records written to s while it runs may be
// missed; run it again once nothing writes to s. Progress, when set, is
// called after each page.
func (s *Store) CopyTo(ctx context.Context, dst *Store, progress func(CopySummary)) (CopySummary, error) {
	var sum CopySummary
	f := Filter{Limit: MaxLimit}
	for {
		page, err := s.List(ctx, f)
		if err != nil {
			return sum, err
		}
		if err := s.copyPage(ctx, dst, page.Records, &sum); err != nil {
			return sum, err
		}
		if progress != nil {
			progress(sum)
		}
		if page.NextCursor == "" {
			return sum, nil
		}
		f.Cursor = page.NextCursor
	}
}

// copyPage writes recs into dst with their replay marks and histories.
func (s *Store) copyPage(ctx context.Context, dst *Store, recs []Record, sum *CopySummary) error {
	for start := 0; start < len(recs); start += MaxFinishAll {
		part := recs[start:min(start+MaxFinishAll, len(recs))]
		if _, err := dst.FinishAll(ctx, part); err != nil {
			return fmt.Errorf("outcome: copy records: %w", err)
		}
		sum.Records += len(part)
	}
	for _, rec := range recs {
		if rec.Status != StatusDeadLetter || rec.ReplayedAs == "" {
			continue
		}
		if _, _, err := dst.MarkReplayed(ctx, rec, rec.ReplayedAs, rec.ReplayedAt); err != nil {
			return fmt.Errorf("outcome: copy the replay mark of task %s: %w", rec.TaskID, err)
		}
		sum.Replayed++
	}
	hists := make([]*redis.StringSliceCmd, len(recs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, rec := range recs {
			hists[i] = p.LRange(ctx, s.of(rec.TaskID).historyPrefix+rec.TaskID, 0, -1)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("outcome: read attempt histories: %w", err)
	}
	_, err = dst.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, rec := range recs {
			items := hists[i].Val()
			if len(items) == 0 {
				continue
			}
			key := dst.of(rec.TaskID).historyPrefix + rec.TaskID
			args := make([]any, len(items))
			for j, it := range items {
				args[j] = it
			}
			p.Del(ctx, key)
			p.RPush(ctx, key, args...)
			sum.Histories++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outcome: copy attempt histories: %w", err)
	}
	return nil
}
