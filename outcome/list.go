package outcome

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/rkey"
)

// Limits of List.
const (
	// DefaultLimit is the page size when Filter.Limit is zero.
	DefaultLimit = 100
	// MaxLimit is the largest page size; a larger Filter.Limit is cut to it.
	MaxLimit = 1000
	// maxScan bounds the index entries one List call looks at.
	maxScan = 5000
	// minScan is the least budget of index entries, for small limits.
	minScan = 1000
)

// Filter selects records for List. Empty fields match everything; the fields
// that are set must all match.
type Filter struct {
	// Username matches exactly, after strings.TrimSpace.
	Username string
	// ProjectID matches exactly.
	ProjectID string
	// Status is "", "sent" or "dead_letter".
	Status Status
	// Reason is "" or a dead-letter reason.
	Reason Reason
	// Code matches the API error code exactly.
	Code string
	// BatchID matches exactly.
	BatchID string
	// State is "", or for dead letters StateOpen (not replayed yet) or
	// StateReplayed.
	State State
	// Since keeps records that finished at or after it, when set.
	Since time.Time
	// Until keeps records that finished before it, when set.
	Until time.Time
	// Limit is the most records per page: zero means DefaultLimit (100),
	// above MaxLimit (1000) means MaxLimit.
	Limit int
	// Cursor continues from Page.NextCursor of an earlier call; empty starts
	// at the newest record.
	Cursor string
}

// State is whether a dead letter was replayed.
type State string

// The states of a dead letter.
const (
	// StateOpen is a dead letter not replayed yet: work for an operator.
	StateOpen State = "open"
	// StateReplayed is a dead letter replayed as another task (its ReplayedAs).
	StateReplayed State = "replayed"
)

// Page is one page of List, newest record first.
type Page struct {
	// Records holds up to Filter.Limit records; never nil.
	Records []Record `json:"records"`
	// NextCursor continues the listing when set; empty at the end.
	NextCursor string `json:"next_cursor,omitempty"`
}

// position is a place in an index, newest first: entries after it have a
// lower score, or the same score and a lower member. An empty member means
// just before every entry of that score.
type position struct {
	score  string // ms as a decimal, or "+inf"
	member string
}

// List returns the records that match f, newest first. It reads the smallest
// index that f selects and checks the other fields in Go, looking at no more
// than max(10×Limit, 1000) and at most 5,000 index entries per call: a page
// may thus hold fewer than Limit records, even none, and still carry a
// NextCursor. Keep calling with Cursor = NextCursor until it is empty.
//
// A cursor is a position (finished_at, task ID), not an offset, so it stays
// valid while records are added or trimmed: no record is repeated or skipped,
// and records that finished after the position never appear on later pages.
// Records with the same finished_at millisecond are ordered by task ID.
func (s *Store) List(ctx context.Context, f Filter) (Page, error) {
	f.Username = strings.TrimSpace(f.Username)
	pos, err := f.normalize()
	if err != nil {
		return Page{}, err
	}
	page := Page{Records: []Record{}}
	index, empty, err := s.pickIndex(ctx, &f)
	if err != nil {
		return Page{}, err
	}
	if empty {
		return page, nil
	}
	budget := min(max(10*f.Limit, minScan), maxScan)
	since := int64(math.MinInt64)
	if !f.Since.IsZero() {
		since = msCeil(f.Since)
	}
	chunk := f.Limit
	for scanned := 0; scanned < budget; chunk *= 2 {
		n := min(chunk, budget-scanned)
		entries, err := s.scan(ctx, index, pos, n)
		if err != nil {
			return Page{}, err
		}
		scanned += len(entries.all)
		done, err := s.collect(ctx, &f, &page, &pos, entries.kept, since)
		if err != nil {
			return Page{}, err
		}
		if done || len(page.Records) == f.Limit {
			if !done {
				page.NextCursor = pos.encode()
			}
			return page, nil
		}
		if len(entries.all) < n {
			return page, nil
		}
		pos = entries.all[len(entries.all)-1].position()
	}
	page.NextCursor = pos.encode()
	return page, nil
}

// normalize validates f, applies its defaults and returns where to start.
// Its errors are *FieldError.
func (f *Filter) normalize() (position, error) {
	if err := checkStatus(f.Status, true); err != nil {
		return position{}, err
	}
	if err := checkReason(f.Reason, true); err != nil {
		return position{}, err
	}
	if f.Status == StatusSent && f.Reason != "" {
		return position{}, &FieldError{Field: "reason", Value: string(f.Reason), Problem: "sent records have no reason"}
	}
	switch {
	case f.State != "" && f.State != StateOpen && f.State != StateReplayed:
		return position{}, &FieldError{Field: "state", Value: string(f.State), Problem: "want open or replayed (of dead letters)"}
	case f.State != "" && f.Status == StatusSent:
		return position{}, &FieldError{Field: "state", Value: string(f.State), Problem: "sent records are neither open nor replayed"}
	}
	switch {
	case f.Limit < 0:
		return position{}, &FieldError{Field: "limit", Value: strconv.Itoa(f.Limit), Problem: "must not be negative"}
	case f.Limit == 0:
		f.Limit = DefaultLimit
	case f.Limit > MaxLimit:
		f.Limit = MaxLimit
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return position{}, &FieldError{Field: "since", Value: f.Since.Format(time.RFC3339Nano),
			Problem: "is not before until " + f.Until.Format(time.RFC3339Nano)}
	}
	pos := position{score: "+inf"}
	if !f.Until.IsZero() {
		pos.score = strconv.FormatInt(msCeil(f.Until)-1, 10)
	}
	if f.Cursor == "" {
		return pos, nil
	}
	cur, err := decodeCursor(f.Cursor)
	if err != nil {
		return position{}, err
	}
	if !pos.lower(cur.score) {
		pos = cur
	}
	return pos, nil
}

// pickIndex returns the suffix of the smallest index that f selects (over
// every shard), and whether it is empty, in one round trip.
func (s *Store) pickIndex(ctx context.Context, f *Filter) (suffix string, empty bool, err error) {
	var candidates []string
	add := func(value, suffix string) {
		if value != "" {
			candidates = append(candidates, suffix)
		}
	}
	add(f.Username, "user:"+escape(f.Username))
	add(f.BatchID, "batch:"+escape(f.BatchID))
	add(f.Code, "code:"+escape(f.Code))
	add(string(f.Reason), "reason:"+string(f.Reason))
	add(f.ProjectID, "project:"+escape(f.ProjectID))
	add(string(f.Status), "status:"+string(f.Status))
	if f.State == StateReplayed {
		add("replayed", "replayed")
	}
	if len(candidates) == 0 {
		return "all", false, nil
	}
	cards := make([][]*redis.IntCmd, len(candidates))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, suffix := range candidates {
			for _, sh := range s.shards {
				cards[i] = append(cards[i], p.ZCard(ctx, sh.indexPrefix+suffix))
			}
		}
		return nil
	})
	if err != nil {
		return "", false, fmt.Errorf("outcome: size indexes: %w", err)
	}
	best, bestN := 0, int64(-1)
	for i, perShard := range cards {
		var n int64
		for _, c := range perShard {
			n += c.Val()
		}
		if bestN < 0 || n < bestN {
			best, bestN = i, n
		}
	}
	return candidates[best], bestN == 0, nil
}

// entry is one index entry: a task ID and its finished_at in ms.
type entry struct {
	member string
	score  int64
}

func (e entry) position() position {
	return position{score: strconv.FormatInt(e.score, 10), member: e.member}
}

// scanResult holds the entries one scan read (all) and those after the
// position it started from (kept).
type scanResult struct {
	all, kept []entry
}

// scan reads up to n entries of an index (by its suffix) from pos on, over
// every shard, in one round trip: each shard's next n, merged.
func (s *Store) scan(ctx context.Context, suffix string, pos position, n int) (scanResult, error) {
	calls := make([]scanCall, len(s.shards))
	for i, sh := range s.shards {
		calls[i] = scanCall{key: sh.indexPrefix + suffix, args: []any{pos.score, pos.member, n}}
	}
	var all []entry
	for _, c := range rkey.RunScripts(ctx, s.rdb, scanScript, len(calls), func(i int) ([]string, []any) { return []string{calls[i].key}, calls[i].args }) {
		res, err := c.StringSlice()
		if err != nil {
			return scanResult{}, fmt.Errorf("outcome: scan index: %w", err)
		}
		for i := 0; i+1 < len(res); i += 2 {
			score, err := strconv.ParseFloat(res[i+1], 64)
			if err != nil {
				return scanResult{}, fmt.Errorf("outcome: scan index: score %q: %w", res[i+1], err)
			}
			all = append(all, entry{member: res[i], score: int64(score)})
		}
	}
	if len(calls) > 1 {
		slices.SortFunc(all, func(a, b entry) int {
			if c := cmp.Compare(b.score, a.score); c != 0 {
				return c
			}
			return strings.Compare(b.member, a.member)
		})
		all = all[:min(len(all), n)]
	}
	out := scanResult{all: all}
	for _, e := range all {
		if pos.member == "" || e.position().lower(pos.score) || e.member < pos.member {
			out.kept = append(out.kept, e)
		}
	}
	return out, nil
}

// scanCall is one run of scanScript.
type scanCall struct {
	key  string
	args []any
}

// lower reports whether p's score is below score; "+inf" is above all.
func (p position) lower(score string) bool {
	if p.score == "+inf" {
		return false
	}
	if score == "+inf" {
		return true
	}
	a, errA := strconv.ParseInt(p.score, 10, 64)
	b, errB := strconv.ParseInt(score, 10, 64)
	return errA == nil && errB == nil && a < b
}

// collect fetches the records of entries in one round trip and appends those
// matching f to page until it is full, moving pos past each entry it uses.
// It reports done when it reached an entry older than since.
func (s *Store) collect(ctx context.Context, f *Filter, page *Page, pos *position, entries []entry, since int64) (done bool, err error) {
	recs, err := s.read(ctx, entries)
	if err != nil {
		return false, err
	}
	for i, e := range entries {
		if e.score < since {
			return true, nil
		}
		*pos = e.position()
		if recs[i] == nil {
			continue // removed since the scan
		}
		if f.matches(recs[i]) {
			page.Records = append(page.Records, *recs[i])
			if len(page.Records) == f.Limit {
				return false, nil
			}
		}
	}
	return false, nil
}

// read fetches the records of entries in one round trip; nil for those
// removed since.
func (s *Store) read(ctx context.Context, entries []entry) ([]*Record, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.SliceCmd, len(entries))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range entries {
			cmds[i] = p.HMGet(ctx, s.RecordKey(e.member), "record", "attempts")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("outcome: read records: %w", err)
	}
	out := make([]*Record, len(entries))
	for i := range entries {
		v := cmds[i].Val()
		body, ok := v[0].(string)
		if !ok {
			continue
		}
		attempts, _ := v[1].(string)
		rec, err := decode(body, attempts)
		if err != nil {
			return nil, err
		}
		out[i] = &rec
	}
	return out, nil
}

// matches reports whether rec satisfies every field of f that is set.
func (f *Filter) matches(rec *Record) bool {
	ms := rec.FinishedAt.UnixMilli()
	return (f.Username == "" || rec.Username == f.Username) &&
		(f.ProjectID == "" || rec.ProjectID == f.ProjectID) &&
		(f.Status == "" || rec.Status == f.Status) &&
		(f.Reason == "" || rec.Reason == f.Reason) &&
		(f.Code == "" || rec.ErrorCode == f.Code) &&
		(f.BatchID == "" || rec.BatchID == f.BatchID) &&
		(f.State == "" || rec.Status == StatusDeadLetter && (rec.ReplayedAs != "") == (f.State == StateReplayed)) &&
		(f.Since.IsZero() || ms >= msCeil(f.Since)) &&
		(f.Until.IsZero() || ms < msCeil(f.Until))
}

// encode makes p an opaque cursor.
func (p position) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(p.score + ":" + p.member))
}

// decodeCursor parses a cursor made by encode.
func decodeCursor(c string) (position, error) {
	malformed := &FieldError{Field: "cursor", Value: c, Problem: "is malformed; pass next_cursor of a page as it is"}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return position{}, malformed
	}
	score, member, ok := strings.Cut(string(b), ":")
	if _, err := strconv.ParseInt(score, 10, 64); !ok || err != nil {
		return position{}, malformed
	}
	return position{score: score, member: member}, nil
}
