package outcome

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// MarkReplayed notes on the record of the dead letter rec (as Get or List
// returned it) that it was replayed as the task replayedAs at at: its
// ReplayedAs and ReplayedAt, the index of replayed dead letters and the
// replayed counts of Stats. It returns the record as stored, and false when
// it was marked before (by an earlier run of the same replay) or is gone;
// marking twice changes nothing.
func (s *Store) MarkReplayed(ctx context.Context, rec Record, replayedAs string, at time.Time) (Record, bool, error) {
	if rec.Status != StatusDeadLetter {
		return rec, false, fmt.Errorf("%w: task %s is %s, not a dead letter", ErrInvalid, rec.TaskID, rec.Status)
	}
	if replayedAs == "" {
		return rec, false, fmt.Errorf("%w: the replay's task ID is empty", ErrInvalid)
	}
	rec.ReplayedAs, rec.ReplayedAt = replayedAs, time.UnixMilli(at.UnixMilli()).UTC()
	body, err := json.Marshal(rec)
	if err != nil {
		return rec, false, fmt.Errorf("outcome: encode record of task %s: %w", rec.TaskID, err)
	}
	sh := s.of(rec.TaskID)
	n, err := markReplayedScript.Run(ctx, s.rdb, []string{sh.recordPrefix + rec.TaskID, sh.statsKey, sh.indexPrefix + "replayed"},
		body, rec.FinishedAt.UnixMilli(), rec.TaskID, rec.replayCounters()).Int()
	if err != nil {
		return rec, false, fmt.Errorf("outcome: mark task %s replayed: %w", rec.TaskID, err)
	}
	return rec, n == 1, nil
}

// deleteBatch is how many records one script run of Delete removes.
const deleteBatch = 500

// Delete removes the records of taskIDs, with their index entries, Stats
// counts and attempt histories, as if they had aged out, and returns how
// many there were. IDs of no record are skipped.
func (s *Store) Delete(ctx context.Context, taskIDs []string) (int, error) {
	byShard := map[*shard][]string{}
	var order []*shard
	for _, id := range taskIDs {
		sh := s.of(id)
		if byShard[sh] == nil {
			order = append(order, sh)
		}
		byShard[sh] = append(byShard[sh], id)
	}
	removed := 0
	for _, sh := range order {
		ids := byShard[sh]
		for start := 0; start < len(ids); start += deleteBatch {
			n, err := s.remove(ctx, sh, ids[start:min(start+deleteBatch, len(ids))])
			removed += n
			if err != nil {
				return removed, fmt.Errorf("outcome: delete records: %w", err)
			}
		}
	}
	return removed, nil
}

// Span is when the oldest and the newest of a set of records finished;
// zero times when there is none.
type Span struct {
	Oldest time.Time `json:"oldest,omitzero"`
	Newest time.Time `json:"newest,omitzero"`
}

// DeadLetterSpan returns when the oldest and newest retained dead letters
// finished, in one round trip.
func (s *Store) DeadLetterSpan(ctx context.Context) (Span, error) {
	sp, err := s.spans(ctx, []string{"status:" + string(StatusDeadLetter)})
	if err != nil {
		return Span{}, fmt.Errorf("outcome: dead letters' span: %w", err)
	}
	return sp[0], nil
}

// spans returns when the oldest and the newest entry of each index (by its
// suffix) finished, over every shard, in one round trip.
func (s *Store) spans(ctx context.Context, suffixes []string) ([]Span, error) {
	type ends struct{ first, last *redis.ZSliceCmd }
	cmds := make([][]ends, len(suffixes))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, suffix := range suffixes {
			for _, sh := range s.shards {
				key := sh.indexPrefix + suffix
				cmds[i] = append(cmds[i], ends{p.ZRangeWithScores(ctx, key, 0, 0), p.ZRevRangeWithScores(ctx, key, 0, 0)})
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]Span, len(suffixes))
	for i, perShard := range cmds {
		sp := &out[i]
		for _, c := range perShard {
			if z := c.first.Val(); len(z) == 1 {
				if t := time.UnixMilli(int64(z[0].Score)).UTC(); sp.Oldest.IsZero() || t.Before(sp.Oldest) {
					sp.Oldest = t
				}
			}
			if z := c.last.Val(); len(z) == 1 {
				if t := time.UnixMilli(int64(z[0].Score)).UTC(); t.After(sp.Newest) {
					sp.Newest = t
				}
			}
		}
	}
	return out, nil
}

// markReplayedScript marks a dead letter's record replayed, unless it is
// gone or marked already.
//
// KEYS: 1 the record hash, 2 the stats hash, 3 the index of replayed dead
// letters. ARGV: 1 the record's JSON with its replay, 2 its score
// (finished_at in ms), 3 its task ID, 4 the stats fields counting it as
// replayed, newline-separated.
// Returns 1 when it marked the record, 0 otherwise.
var markReplayedScript = redis.NewScript(`
local r = redis.call('HMGET', KEYS[1], 'index', 'stats')
if not r[1] then return 0 end
if string.find('\n' .. r[1] .. '\n', '\nreplayed\n', 1, true) then return 0 end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'index', r[1] .. '\nreplayed', 'stats', (r[2] or '') .. '\n' .. ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
for f in string.gmatch(ARGV[4], '[^\n]+') do redis.call('HINCRBY', KEYS[2], f, 1) end
return 1
`)

// DeadLetterStats counts the retained dead letters, open and replayed.
type DeadLetterStats struct {
	Total    int64 `json:"dead_letters"`
	Open     int64 `json:"open"`
	Replayed int64 `json:"replayed"`
	Span
	// ByCode, ByReason and ByProject split the counts by API error code
	// (dead letters without one are left out), reason and project ID.
	ByCode    map[string]OpenReplayed `json:"by_code"`
	ByReason  map[string]OpenReplayed `json:"by_reason"`
	ByProject map[string]OpenReplayed `json:"by_project"`
}

// OpenReplayed is a count of dead letters, open and replayed; for an error
// code, also when the oldest and newest of them finished.
type OpenReplayed struct {
	Open     int64     `json:"open"`
	Replayed int64     `json:"replayed"`
	Oldest   time.Time `json:"oldest,omitzero"`
	Newest   time.Time `json:"newest,omitzero"`
}

// DeadLetters counts the retained dead letters in two round trips.
func (s *Store) DeadLetters(ctx context.Context) (DeadLetterStats, error) {
	st, err := s.Stats(ctx)
	if err != nil {
		return DeadLetterStats{}, err
	}
	sp, err := s.DeadLetterSpan(ctx)
	if err != nil {
		return DeadLetterStats{}, err
	}
	split := func(all, replayed map[string]int64) map[string]OpenReplayed {
		m := make(map[string]OpenReplayed, len(all))
		for k, n := range all {
			m[k] = OpenReplayed{Open: n - replayed[k], Replayed: replayed[k]}
		}
		return m
	}
	dl := DeadLetterStats{
		Total: st.DeadLetter, Open: st.DeadLetter - st.Replayed, Replayed: st.Replayed, Span: sp,
		ByCode: split(st.ByCode, st.ReplayedByCode), ByReason: split(st.ByReason, st.ReplayedByReason),
		ByProject: split(st.DeadByProject, st.ReplayedByProject),
	}
	if err := s.codeSpans(ctx, dl.ByCode); err != nil {
		return DeadLetterStats{}, err
	}
	return dl, nil
}

// codeSpans sets when the oldest and newest records of each code finished,
// in one round trip.
func (s *Store) codeSpans(ctx context.Context, byCode map[string]OpenReplayed) error {
	if len(byCode) == 0 {
		return nil
	}
	codes := make([]string, 0, len(byCode))
	suffixes := make([]string, 0, len(byCode))
	for code := range byCode {
		codes, suffixes = append(codes, code), append(suffixes, "code:"+escape(code))
	}
	sp, err := s.spans(ctx, suffixes)
	if err != nil {
		return fmt.Errorf("outcome: dead letters' span by code: %w", err)
	}
	for i, code := range codes {
		n := byCode[code]
		n.Oldest, n.Newest = sp[i].Oldest, sp[i].Newest
		byCode[code] = n
	}
	return nil
}
