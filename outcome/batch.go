package outcome

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/rkey"
)

// BatchCounts counts the finished tasks of one batch.
type BatchCounts struct {
	Sent       int64            `json:"sent"`
	DeadLetter int64            `json:"dead_letter"`
	ByReason   map[string]int64 `json:"dead_by_reason"`
	ByCode     map[string]int64 `json:"dead_by_code"`
	// LastMinute counts those that finished in the last minute, by Redis's
	// clock: the batch's current pace.
	LastMinute int64 `json:"finished_last_minute"`
}

// Batch counts the records of batchID by status, dead-letter reason and
// error code, in one script run: index intersections on Redis (ZINTERCARD,
// Redis 7), never the records themselves.
func (s *Store) Batch(ctx context.Context, batchID string) (BatchCounts, error) {
	if batchID == "" {
		return BatchCounts{}, fmt.Errorf("%w: batch ID is empty", ErrInvalid)
	}
	st, err := s.Stats(ctx) // the codes and reasons there are
	if err != nil {
		return BatchCounts{}, err
	}
	suffixes := []string{"batch:" + escape(batchID), "status:" + string(StatusSent), "status:" + string(StatusDeadLetter)}
	var names []string
	for r := range st.ByReason {
		suffixes, names = append(suffixes, "reason:"+r), append(names, "reason:"+r)
	}
	for c := range st.ByCode {
		suffixes, names = append(suffixes, "code:"+escape(c)), append(names, "code:"+c)
	}
	calls := make([][]string, len(s.shards))
	for i, sh := range s.shards {
		for _, suffix := range suffixes {
			calls[i] = append(calls[i], sh.indexPrefix+suffix)
		}
	}
	n := make([]int64, len(suffixes))
	for _, c := range rkey.RunScripts(ctx, s.rdb, batchCountScript, len(calls), func(i int) ([]string, []any) { return calls[i], nil }) {
		part, err := c.Int64Slice()
		if err == nil && len(part) != len(suffixes) {
			err = fmt.Errorf("unexpected reply of %d items", len(part))
		}
		if err != nil {
			return BatchCounts{}, fmt.Errorf("outcome: count batch %s: %w", batchID, err)
		}
		for i, v := range part {
			n[i] += v
		}
	}
	bc := BatchCounts{Sent: n[1], DeadLetter: n[2], LastMinute: n[0], ByReason: map[string]int64{}, ByCode: map[string]int64{}}
	for i, name := range names {
		if v := n[3+i]; v > 0 {
			if r, ok := strings.CutPrefix(name, "reason:"); ok {
				bc.ByReason[r] = v
			} else {
				bc.ByCode[strings.TrimPrefix(name, "code:")] = v
			}
		}
	}
	return bc, nil
}

// batchCountScript counts a batch's index entries in other indexes.
//
// KEYS: 1 the batch's index, 2... indexes to intersect it with. Returns the
// entries of KEYS[1] of the last minute by Redis's clock, then the size of
// each intersection.
var batchCountScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {redis.call('ZCOUNT', KEYS[1], now - 60000, '+inf')}
for i = 2, #KEYS do
  out[#out + 1] = redis.call('ZINTERCARD', 2, KEYS[1], KEYS[i])
end
return out
`)
