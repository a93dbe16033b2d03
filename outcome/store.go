// Package outcome keeps the final outcome of every resend task in Redis, so
// that support staff can see whether a user got their email and why not, and
// operators can list dead letters and count outcomes. asynq's own archive is
// trimmed silently past 10,000 tasks; these records are removed only by the
// retention rule (Store.Trim).
//
// # Keys
//
// All keys start with Options.KeyPrefix ("resendq:" by default):
//
//	outcome:{task_id}            HASH  one task's record (RecordKey):
//	                                   record   the Record as JSON (its attempts
//	                                            as the caller passed them)
//	                                   attempts total calls, 429s included
//	                                   project  the project ID
//	                                   index    the index suffixes listing it
//	                                   stats    the stats fields counting it
//	                                   status   its Status (StatusField): the
//	                                            one field other packages' scripts
//	                                            may read
//	outcome-index:all            ZSET  every task ID, scored by finished_at (ms)
//	outcome-index:status:{s}     ZSET  the same, per status
//	outcome-index:reason:{r}     ZSET  per dead-letter reason
//	outcome-index:code:{c}       ZSET  per API error code
//	outcome-index:project:{p}    ZSET  per project ID
//	outcome-index:user:{u}       ZSET  per username (all projects)
//	outcome-index:batch:{b}      ZSET  per batch ID
//	outcome-index:replayed       ZSET  the dead letters replayed (MarkReplayed)
//	outcome-stats                HASH  counters of the retained records:
//	                                   sent, dead_letter, reason:{r}, code:{c},
//	                                   dead-project:{p}; of the replayed dead
//	                                   letters: replayed, replayed-reason:{r},
//	                                   replayed-code:{c}, replayed-project:{p}
//	outcome-rl:{task_id}         HASH  a running task's state: its 429s (calls),
//	                                   the ms they asked it to wait (waited), the
//	                                   ms it was held back by outages (held),
//	                                   whether it has a history (history);
//	                                   expires after Options.Retention, deleted
//	                                   by Finish
//	outcome-history:{task_id}    LIST  the task's last 20 attempts that did not
//	                                   end it (AddAttempt), oldest first, each an
//	                                   Attempt as JSON; expires after
//	                                   Options.Retention while the task runs; from
//	                                   Finish on it lives as long as the record,
//	                                   and Trim removes both
//
// In index keys and stats fields, codes, project IDs, usernames and batch IDs
// are escaped: every byte other than ASCII letters, digits and "-._@+~"
// becomes %XX, so "a:b@x.io" is stored as "a%3Ab@x.io". Record keys end with
// the raw task ID; their prefix "outcome:" never collides with the others.
//
// Every write (Finish, FinishAll, RateLimited, AddAttempt) is one Lua script run with
// EVALSHA, one round trip, and every script is given all the keys it touches.
//
// # Redis Cluster
//
// On a cluster client the records are split over ClusterShards shards by a
// hash of the task ID. Every key of shard i carries the shard's hash tag
// after the prefix, e.g. "resendq:{o3.1}:outcome:{task_id}", so that each
// shard lives in one slot and its scripts touch one slot; the tags are
// picked so that the shards spread over the whole slot range, and thus over
// every master. Whoever has a task ID finds its record in one step; the
// indexes and stats are per shard, and List, Latest, Stats, DeadLetters and
// Batch read every shard in one pipelined round trip (one per master, in
// parallel) and merge. FinishAll runs one script per shard.
package outcome

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/rkey"
)

// Defaults of Options and of the retention loop.
const (
	// DefaultRetention is how long records are kept when Options.Retention is zero.
	DefaultRetention = 30 * 24 * time.Hour
	// DefaultKeyPrefix starts every key when Options.KeyPrefix is empty.
	DefaultKeyPrefix = "resendq:"
	// DefaultRetentionInterval is how often RunRetention trims when its interval is not positive.
	DefaultRetentionInterval = time.Hour
)

const (
	trimBatch   = 500  // records removed per trim script run
	latestDepth = 1000 // newest entries of a user that Latest looks at
)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Retention is how long a record is kept after it finished, and how long
	// a running task's rate-limit state and attempt history live. Zero or negative means
	// DefaultRetention (30 days).
	Retention time.Duration
	// Clock stamps FinishedAt when a record comes without one, and paces
	// RunRetention. Default: the real clock. (How long ago a record
	// finished, and how long a task has waited on 429s, are measured on
	// Redis's clock.)
	Clock clockwork.Clock
	// KeyPrefix starts every key; empty means DefaultKeyPrefix ("resendq:").
	KeyPrefix string
}

// Store reads and writes outcome records in Redis. It is safe for concurrent use.
type Store struct {
	rdb       redis.UniversalClient
	retention time.Duration
	clock     clockwork.Clock
	shards    []*shard // one on a single node; ClusterShards on a cluster
}

// shard holds the keys of one share of the records: on a single node the
// only one, named as the package doc says; on a cluster one of
// ClusterShards, whose keys all carry one hash tag (one slot).
type shard struct {
	recordPrefix  string // + task ID
	ratePrefix    string // + task ID
	historyPrefix string // + task ID
	indexPrefix   string // + index suffix
	statsKey      string
}

func newShard(p string) *shard {
	return &shard{
		recordPrefix:  p + "outcome:",
		ratePrefix:    p + "outcome-rl:",
		historyPrefix: p + "outcome-history:",
		indexPrefix:   p + "outcome-index:",
		statsKey:      p + "outcome-stats",
	}
}

// ClusterShards is how many shares the records are split into on Redis
// Cluster, each under a hash tag of its own. The tags are chosen so that
// shard i's slot lies in the i-th sixteenth of the slot range: on a cluster
// whose masters hold equal ranges of slots, every master holds records. The
// number is part of the key layout: changing it strands the records written
// before.
const ClusterShards = 16

// NewStore returns a Store over rdb, filling unset Options with their defaults.
// On a Redis Cluster client (rkey.IsCluster) the records are split over
// ClusterShards hash tags; on a single node they keep the one layout.
func NewStore(rdb redis.UniversalClient, opts Options) *Store {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = DefaultKeyPrefix
	}
	s := &Store{rdb: rdb, retention: opts.Retention, clock: opts.Clock}
	if !rkey.IsCluster(rdb) {
		s.shards = []*shard{newShard(opts.KeyPrefix)}
		return s
	}
	for _, tag := range shardTags(ClusterShards) {
		s.shards = append(s.shards, newShard(opts.KeyPrefix+tag+":"))
	}
	return s
}

// shardTags returns n hash tags, the i-th the first of "{o<i>.<k>}" for k =
// 0, 1, ... whose slot falls in the i-th n-th of the slot range.
func shardTags(n int) []string {
	tags := make([]string, n)
	for i := range tags {
		for k := 0; ; k++ {
			tag := "{o" + strconv.Itoa(i) + "." + strconv.Itoa(k) + "}"
			if rkey.Slot(tag)*n/16384 == i {
				tags[i] = tag
				break
			}
		}
	}
	return tags
}

// of returns the shard of a task's record: on a cluster, by a hash of the
// task ID, so that whoever has only the ID finds the record in one step.
func (s *Store) of(taskID string) *shard {
	if len(s.shards) == 1 {
		return s.shards[0]
	}
	h := fnv.New32a()
	h.Write([]byte(taskID))
	return s.shards[h.Sum32()%uint32(len(s.shards))]
}

// StatusField is the field of a record's hash (RecordKey) that holds its
// Status: what a script of another package may read of a record, in the
// same step as its own writes (the batch enqueue checks whether the task
// holding a user's dedup claim ended as a dead letter). Every other field
// is the Store's own.
const StatusField = "status"

// RecordKey is the Redis key of the record of taskID, for such scripts;
// RecordKey("") is the prefix of every record's key.
func (s *Store) RecordKey(taskID string) string { return s.of(taskID).recordPrefix + taskID }

// RateState is the running rate-limit state of a task that is not final yet.
type RateState struct {
	// Calls counts the task's calls answered with 429 so far.
	Calls int
	// Waited is the total of the waits its earlier 429s asked for, as
	// recorded by RateWait.
	Waited time.Duration
}

// RateLimited records one rate-limited (HTTP 429) call of a task that is not
// final yet and returns the task's running state: how many 429s so far and
// the waits they asked for. It costs one round trip. Finish adds the calls
// to the record's Attempts and deletes the state; unfinished state expires
// after the retention period.
func (s *Store) RateLimited(ctx context.Context, taskID string) (RateState, error) {
	if taskID == "" {
		return RateState{}, &FieldError{Field: "task_id", Problem: "is empty"}
	}
	res, err := rateLimitedScript.Run(ctx, s.rdb, []string{s.of(taskID).ratePrefix + taskID}, s.retention.Milliseconds()).Int64Slice()
	if err != nil {
		return RateState{}, fmt.Errorf("outcome: record 429 of task %s: %w", taskID, err)
	}
	if len(res) != 2 {
		return RateState{}, fmt.Errorf("outcome: record 429 of task %s: unexpected reply %v", taskID, res)
	}
	return RateState{Calls: int(res[0]), Waited: time.Duration(res[1]) * time.Millisecond}, nil
}

// RateWait records that a 429 of a task that is not final yet asked it to
// wait d (RateState.Waited), in one round trip.
func (s *Store) RateWait(ctx context.Context, taskID string, d time.Duration) error {
	_, err := s.addWait(ctx, taskID, "waited", d)
	return err
}

// Held adds d to the time a task that is not final yet has been held back
// by outages and returns the total, in one round trip. The total lives in
// the task's running state (see RateLimited) until Finish.
func (s *Store) Held(ctx context.Context, taskID string, d time.Duration) (time.Duration, error) {
	return s.addWait(ctx, taskID, "held", d)
}

// addWait adds d to a field of a task's running state and returns its total.
func (s *Store) addWait(ctx context.Context, taskID, field string, d time.Duration) (time.Duration, error) {
	if taskID == "" {
		return 0, &FieldError{Field: "task_id", Problem: "is empty"}
	}
	ms, err := addWaitScript.Run(ctx, s.rdb, []string{s.of(taskID).ratePrefix + taskID}, field, d.Milliseconds(), s.retention.Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("outcome: record a wait of task %s: %w", taskID, err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Finish writes rec as the task's final outcome in one round trip and returns
// it as stored: Username trimmed of spaces, FinishedAt set to now when zero
// and cut to milliseconds, and Attempts (the calls the caller knows of, i.e.
// retry count + 1) increased by the task's recorded 429s, whose state it then
// deletes. The task's attempt history (AddAttempt) stops expiring: it lives
// as long as the record. Finishing the same TaskID again replaces the record, its index
// entries and its Stats counts, so a task re-run after a crash counts once;
// but a sent record stays: an outcome of another status for a task whose
// email went out (a re-run after a crash between the record and asynq's
// done) writes nothing, and Finish returns the sent record instead.
func (s *Store) Finish(ctx context.Context, rec Record) (Record, error) {
	out, err := s.FinishAll(ctx, []Record{rec})
	if err != nil {
		return Record{}, err
	}
	return out[0], nil
}

// MaxFinishAll is the most records FinishAll writes in one call; a script
// run holds Redis for some 20µs per record.
const MaxFinishAll = 100

// FinishAll writes each of recs as Finish does, all in one round trip and
// one script run per shard (one on a single node), in order, and returns
// them as stored. It writes nothing when one of them is invalid, and at most
// MaxFinishAll records. When it fails otherwise, any of the records may or
// may not have been written; writing them again is safe.
func (s *Store) FinishAll(ctx context.Context, recs []Record) ([]Record, error) {
	if len(recs) > MaxFinishAll {
		return nil, fmt.Errorf("%w: %d records, at most %d at once", ErrInvalid, len(recs), MaxFinishAll)
	}
	out := make([]Record, len(recs))
	// The JSON bodies, index suffixes and stats fields of all records share
	// one buffer; the arguments are slices of it.
	var buf bytes.Buffer
	buf.Grow(len(recs) * 640)
	enc := json.NewEncoder(&buf)
	spans := make([]finishSpan, len(recs))
	for i, rec := range recs {
		rec.Username = strings.TrimSpace(rec.Username)
		if err := rec.validate(); err != nil {
			return nil, err
		}
		if rec.FinishedAt.IsZero() {
			rec.FinishedAt = s.clock.Now()
		}
		rec.FinishedAt = time.UnixMilli(rec.FinishedAt.UnixMilli()).UTC()
		start := buf.Len()
		if err := enc.Encode(rec); err != nil { // json.Marshal's bytes and a newline
			return nil, fmt.Errorf("outcome: encode record of task %s: %w", rec.TaskID, err)
		}
		sp := &spans[i]
		sp.body = [2]int{start, buf.Len() - 1}
		sp.index[0] = buf.Len()
		buf.Write(rec.appendIndexes(buf.AvailableBuffer()))
		sp.index[1] = buf.Len()
		sp.counters[0] = buf.Len()
		buf.Write(rec.appendCounters(buf.AvailableBuffer()))
		sp.counters[1] = buf.Len()
		out[i] = rec
	}
	if len(recs) == 0 {
		return out, nil
	}
	groups := map[*shard][]int{}
	var order []*shard
	for i := range out {
		sh := s.of(out[i].TaskID)
		if groups[sh] == nil {
			order = append(order, sh)
		}
		groups[sh] = append(groups[sh], i)
	}
	calls := make([]*finishCall, len(order))
	for g, sh := range order {
		calls[g] = newFinishCall(sh, out, spans, buf.Bytes(), groups[sh])
	}
	// A record replaced by this write may be listed in indexes the new one
	// is not: the script then names them and the write is made again with
	// their keys too.
	for try := 0; len(calls) > 0; try++ {
		replies := rkey.RunScripts(ctx, s.rdb, finishScript, len(calls), func(i int) ([]string, []any) { return calls[i].keys.keys, calls[i].args })
		var again []*finishCall
		for g, c := range calls {
			reply, err := replies[g].Slice()
			if err == nil && c.keys.missing(reply) && try < 3 {
				again = append(again, c)
				continue
			}
			if err == nil && len(reply) != 2*len(c.recs) {
				err = fmt.Errorf("unexpected reply of %d items", len(reply))
			}
			if err == nil {
				err = readFinished(out, c.recs, reply)
			}
			if err != nil {
				return nil, fmt.Errorf("outcome: write record of task %s: %w", taskIDs(recs), err)
			}
		}
		calls = again
	}
	return out, nil
}

// finishSpan locates one record's JSON, index suffixes and stats fields in
// FinishAll's buffer.
type finishSpan struct{ body, index, counters [2]int }

// finishCall is one run of finishScript: the records of one shard.
type finishCall struct {
	recs []int // positions in FinishAll's records
	keys scriptKeys
	args []any
}

func newFinishCall(sh *shard, out []Record, spans []finishSpan, b []byte, recs []int) *finishCall {
	c := &finishCall{recs: recs, keys: newScriptKeys(sh, 1+9*len(recs), sh.statsKey)}
	c.args = make([]any, 2, 2+8*len(recs))
	c.args[0], c.args[1] = sh.indexPrefix, len(recs)
	for _, i := range recs {
		rec, sp := &out[i], &spans[i]
		c.keys.add(sh.recordPrefix+rec.TaskID, sh.ratePrefix+rec.TaskID, sh.historyPrefix+rec.TaskID)
		c.args = append(c.args, rec.TaskID, b[sp.body[0]:sp.body[1]], rec.Attempts, rec.ProjectID, rec.FinishedAt.UnixMilli(),
			b[sp.index[0]:sp.index[1]], b[sp.counters[0]:sp.counters[1]], string(rec.Status))
	}
	for _, i := range recs {
		sp := &spans[i]
		c.keys.indexes(string(b[sp.index[0]:sp.index[1]]))
	}
	return c
}

// scriptKeys are the KEYS of a script run on one shard: its own keys, then
// the index keys (each once) of the records it writes or removes.
type scriptKeys struct {
	sh    *shard
	keys  []string
	given map[string]bool // the index suffixes in keys
}

func newScriptKeys(sh *shard, capacity int, keys ...string) scriptKeys {
	return scriptKeys{sh: sh, keys: append(make([]string, 0, capacity), keys...), given: map[string]bool{}}
}

// add appends keys.
func (k *scriptKeys) add(keys ...string) { k.keys = append(k.keys, keys...) }

// indexes appends the keys of the newline-separated index suffixes that are
// not there yet.
func (k *scriptKeys) indexes(suffixes string) {
	for suffix := range strings.SplitSeq(suffixes, "\n") {
		if suffix != "" && !k.given[suffix] {
			k.given[suffix] = true
			k.keys = append(k.keys, k.sh.indexPrefix+suffix)
		}
	}
}

// missing reports whether a script's reply is -1 and the suffixes of
// indexes whose keys it was not given, and appends their keys.
func (k *scriptKeys) missing(reply []any) bool {
	if len(reply) == 0 || reply[0] != int64(-1) {
		return false
	}
	for _, m := range reply[1:] {
		if suffix, ok := m.(string); ok {
			k.indexes(suffix)
		}
	}
	return true
}

// readFinished reads the reply of finishScript into out at the positions
// recs: each record's attempts, or the sent record kept in its place.
func readFinished(out []Record, recs []int, reply []any) error {
	for j, i := range recs {
		attempts, ok := reply[2*j].(int64)
		kept, ok2 := reply[2*j+1].(string)
		if !ok || !ok2 {
			return fmt.Errorf("unexpected reply %v", reply[2*j:2*j+2])
		}
		if kept != "" {
			var rec Record
			if err := json.Unmarshal([]byte(kept), &rec); err != nil {
				return fmt.Errorf("kept record: %w", err)
			}
			out[i] = rec
		}
		out[i].Attempts = int(attempts)
	}
	return nil
}

// taskIDs names the tasks of recs for an error: "t1", or "t1 and 4 more".
func taskIDs(recs []Record) string {
	if len(recs) == 1 {
		return recs[0].TaskID
	}
	return fmt.Sprintf("%s and %d more", recs[0].TaskID, len(recs)-1)
}

// Latest returns the newest record of username in projectID, and false if
// there is none. The username is matched exactly after strings.TrimSpace; an
// empty projectID matches any project. It looks at the user's newest 1,000
// records at most, usually in two round trips: one reads the newest
// entries of the user's index (of every shard), one their records.
func (s *Store) Latest(ctx context.Context, projectID, username string) (Record, bool, error) {
	username = strings.TrimSpace(username)
	if username == "" {
		return Record{}, false, fmt.Errorf("%w: username is empty", ErrInvalid)
	}
	pos, step := position{score: "+inf"}, 20
	for scanned := 0; scanned < latestDepth; scanned += step {
		entries, err := s.scan(ctx, "user:"+escape(username), pos, step)
		if err != nil {
			return Record{}, false, fmt.Errorf("outcome: latest record of a user: %w", err)
		}
		recs, err := s.read(ctx, entries.kept)
		if err != nil {
			return Record{}, false, fmt.Errorf("outcome: latest record of a user: %w", err)
		}
		for _, rec := range recs {
			if rec != nil && (projectID == "" || rec.ProjectID == projectID) {
				return *rec, true, nil
			}
		}
		if len(entries.all) < step {
			break
		}
		pos = entries.all[len(entries.all)-1].position()
	}
	return Record{}, false, nil
}

// decode turns a stored record and its attempts field into a Record.
func decode(body, attempts string) (Record, error) {
	var rec Record
	if err := json.Unmarshal([]byte(body), &rec); err != nil {
		return Record{}, fmt.Errorf("outcome: decode record: %w", err)
	}
	if attempts != "" {
		n, err := strconv.Atoi(attempts)
		if err != nil {
			return Record{}, fmt.Errorf("outcome: decode attempts of task %s: %w", rec.TaskID, err)
		}
		rec.Attempts = n
	}
	return rec, nil
}

// Stats counts the retained records by status, dead-letter reason and error code.
type Stats struct {
	// Sent counts records with status sent.
	Sent int64 `json:"sent"`
	// DeadLetter counts records with status dead_letter.
	DeadLetter int64 `json:"dead_letter"`
	// ByReason counts dead letters per reason; never nil.
	ByReason map[string]int64 `json:"by_reason"`
	// ByCode counts records per API error code; never nil.
	ByCode map[string]int64 `json:"by_code"`
	// DeadByProject counts dead letters per project ID; never nil. (Dead
	// letters recorded before it was counted are left out.)
	DeadByProject map[string]int64 `json:"dead_by_project"`
	// Replayed counts the dead letters replayed (MarkReplayed); the others
	// are open.
	Replayed int64 `json:"replayed"`
	// ReplayedByReason, ReplayedByCode and ReplayedByProject count them per
	// reason, error code and project; never nil.
	ReplayedByReason  map[string]int64 `json:"replayed_by_reason"`
	ReplayedByCode    map[string]int64 `json:"replayed_by_code"`
	ReplayedByProject map[string]int64 `json:"replayed_by_project"`
}

// Stats returns the counts of the retained records, read in one round trip
// (the counts of every shard, added up). Records removed by Trim are no
// longer counted.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	cmds := make([]*redis.MapStringStringCmd, len(s.shards))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sh := range s.shards {
			cmds[i] = p.HGetAll(ctx, sh.statsKey)
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("outcome: read stats: %w", err)
	}
	st := Stats{
		ByReason: map[string]int64{}, ByCode: map[string]int64{}, DeadByProject: map[string]int64{},
		ReplayedByReason: map[string]int64{}, ReplayedByCode: map[string]int64{}, ReplayedByProject: map[string]int64{},
	}
	for _, c := range cmds {
		if err := st.add(c.Val()); err != nil {
			return Stats{}, err
		}
	}
	return st, nil
}

// add adds the counts of one shard's stats hash to st.
func (st *Stats) add(fields map[string]string) error {
	for f, v := range fields {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("outcome: read stats field %q: %w", f, err)
		}
		switch {
		case f == string(StatusSent):
			st.Sent += n
		case f == string(StatusDeadLetter):
			st.DeadLetter += n
		case strings.HasPrefix(f, "reason:"):
			st.ByReason[strings.TrimPrefix(f, "reason:")] += n
		case strings.HasPrefix(f, "code:"):
			st.ByCode[unescape(strings.TrimPrefix(f, "code:"))] += n
		case strings.HasPrefix(f, "dead-project:"):
			st.DeadByProject[unescape(strings.TrimPrefix(f, "dead-project:"))] += n
		case f == "replayed":
			st.Replayed += n
		case strings.HasPrefix(f, "replayed-reason:"):
			st.ReplayedByReason[strings.TrimPrefix(f, "replayed-reason:")] += n
		case strings.HasPrefix(f, "replayed-code:"):
			st.ReplayedByCode[unescape(strings.TrimPrefix(f, "replayed-code:"))] += n
		case strings.HasPrefix(f, "replayed-project:"):
			st.ReplayedByProject[unescape(strings.TrimPrefix(f, "replayed-project:"))] += n
		}
	}
	return nil
}

// Trim removes the records that finished more than the retention period ago
// (by Redis's clock, so that a worker whose clock runs ahead removes nothing
// early), in batches of 500 per shard, together with their index entries,
// Stats counts and attempt histories, and returns how many it removed.
// Nothing else ever removes a record.
func (s *Store) Trim(ctx context.Context) (removed int, err error) {
	for _, sh := range s.shards {
		for {
			ids, err := expiredScript.Run(ctx, s.rdb, []string{sh.indexPrefix + "all"},
				s.retention.Milliseconds(), trimBatch).StringSlice()
			if err == nil {
				var n int
				n, err = s.remove(ctx, sh, ids)
				removed += n
			}
			if err != nil {
				return removed, fmt.Errorf("outcome: trim records: %w", err)
			}
			if len(ids) < trimBatch {
				break
			}
			if err := ctx.Err(); err != nil {
				return removed, fmt.Errorf("outcome: trim records: %w", err)
			}
		}
	}
	return removed, nil
}

// remove removes the records of ids, all of shard sh, with removeScript: it
// reads the indexes that list them first, in one round trip, and then runs
// the script, again with the keys of indexes it names if one of the records
// changed in between. It returns how many records there were.
func (s *Store) remove(ctx context.Context, sh *shard, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	cmds := make([]*redis.StringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGet(ctx, sh.recordPrefix+id, "index")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("read the indexes of records: %w", err)
	}
	keys := newScriptKeys(sh, 2+4*len(ids), sh.indexPrefix+"all", sh.statsKey)
	args := make([]any, 1, 1+len(ids))
	args[0] = sh.indexPrefix
	for _, id := range ids {
		keys.add(sh.recordPrefix+id, sh.ratePrefix+id, sh.historyPrefix+id)
		args = append(args, id)
	}
	for _, c := range cmds {
		keys.indexes(c.Val())
	}
	for try := 0; ; try++ {
		reply, err := removeScript.Run(ctx, s.rdb, keys.keys, args...).Slice()
		if err != nil {
			return 0, err
		}
		if n, ok := reply[0].(int64); ok && len(reply) == 1 {
			return int(n), nil
		}
		if !keys.missing(reply) || try == 3 {
			return 0, fmt.Errorf("the records' indexes keep changing (reply %v)", reply)
		}
	}
}

// RunRetention calls Trim at once and then every interval until ctx is done,
// passing each result to log (which may be nil). An interval that is not
// positive means DefaultRetentionInterval (1 hour).
func (s *Store) RunRetention(ctx context.Context, every time.Duration, log func(removed int, err error)) {
	if every <= 0 {
		every = DefaultRetentionInterval
	}
	t := s.clock.NewTicker(every)
	defer t.Stop()
	for {
		removed, err := s.Trim(ctx)
		if ctx.Err() != nil {
			return
		}
		if log != nil {
			log(removed, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
	}
}

// msCeil returns t in Unix milliseconds, rounded up.
func msCeil(t time.Time) int64 {
	ms := t.UnixMilli()
	if t.After(time.UnixMilli(ms)) {
		ms++
	}
	return ms
}
