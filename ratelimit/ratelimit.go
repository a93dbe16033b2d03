// Package ratelimit keeps a fleet of workers within the Login API's rate
// limits, which the API applies per Login project (and per method and IP):
//
//   - A 429 starts a cool-down of its project on every worker that shares
//     the Redis: none of them calls the API for that project until the
//     cool-down ends. The worker that got the 429 writes the end time to a
//     Redis hash and publishes it; the others hear of it at once over
//     Pub/Sub, and read the hash when they start and every SyncInterval, so
//     that a message missed during a reconnect is caught up.
//   - Options.Rate, when set, caps the calls per second for one project
//     across the fleet (GCRA, github.com/go-redis/redis_rate): one Redis
//     round trip per call.
//
// Until the first 429, and without a Rate, Wait costs no Redis round trip.
//
// Redis keys (with the default prefix): resendq:cooldowns (hash: project ID
// → end of its cool-down, Unix ms) and rate:resendq:rate:{project} (the
// GCRA state); the channel is resendq:cooldowns.
package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Defaults of Options.
const (
	DefaultMaxCoolDown  = 5 * time.Minute
	DefaultSyncInterval = 10 * time.Second
)

// Options configure a Limiter. Zero values are defaults.
type Options struct {
	// Rate is the most calls per second to the API for one project, across
	// every worker on this Redis. 0: no limit.
	Rate int
	// MaxCoolDown caps one cool-down, whatever the Retry-After. Default 5m.
	MaxCoolDown time.Duration
	// SyncInterval is how often Run reads the cool-downs from Redis besides
	// the messages it hears. Default 10s.
	SyncInterval time.Duration
	// KeyPrefix prefixes the Redis keys and channel. Default "resendq:".
	KeyPrefix string
	// OnError is told when Redis fails the limiter; calls then go ahead
	// (the API's own 429s still hold them back). Default: ignored.
	OnError func(error)
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// After waits as time.After does. Default time.After.
	After func(time.Duration) <-chan time.Time
}

// Limiter is the rate limiting of one worker process. It is safe for
// concurrent use.
type Limiter struct {
	rdb     redis.UniversalClient
	rate    *redis_rate.Limiter // nil: no Rate
	opts    Options
	hash    string // the cool-downs hash, also the channel
	ratePfx string

	mu     sync.Mutex
	until  map[string]time.Time // project → end of its cool-down, as far as known here
	pauses atomic.Int32         // len(until), read without the lock
}

// New returns a Limiter on rdb. Call Run to hear of other workers'
// cool-downs.
func New(rdb redis.UniversalClient, opts Options) *Limiter {
	if opts.MaxCoolDown <= 0 {
		opts.MaxCoolDown = DefaultMaxCoolDown
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "resendq:"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	l := &Limiter{
		rdb: rdb, opts: opts,
		hash:    opts.KeyPrefix + "cooldowns",
		ratePfx: opts.KeyPrefix + "rate:",
		until:   map[string]time.Time{},
	}
	if opts.Rate > 0 {
		l.rate = redis_rate.NewLimiter(rdb)
	}
	return l
}

// Wait returns once a call for project may be made: after its cool-down,
// if any, and, with a Rate, once the fleet's rate allows one more call. It
// returns ctx's error if ctx ends first.
func (l *Limiter) Wait(ctx context.Context, project string) error {
	for {
		if d := l.Until(project).Sub(l.opts.Now()); d > 0 {
			if err := l.sleep(ctx, d); err != nil {
				return err
			}
			continue
		}
		if l.rate == nil {
			return nil
		}
		res, err := l.rate.Allow(ctx, l.ratePfx+project, redis_rate.PerSecond(l.opts.Rate))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			l.fail(fmt.Errorf("rate limit of project %s: %w", project, err))
			return nil
		}
		if res.Allowed > 0 {
			return nil
		}
		if err := l.sleep(ctx, res.RetryAfter); err != nil {
			return err
		}
	}
}

// CoolDown pauses the calls for project on every worker for d (at most
// MaxCoolDown), unless a cool-down already runs longer. It reports whether
// it started or extended one, and when the cool-down ends.
func (l *Limiter) CoolDown(ctx context.Context, project string, d time.Duration) (started bool, until time.Time, err error) {
	now := l.opts.Now()
	until = now.Add(min(d, l.opts.MaxCoolDown)).Truncate(time.Millisecond)
	if !l.extend(project, until) {
		return false, l.Until(project), nil
	}
	n, err := coolDownScript.Run(ctx, l.rdb, []string{l.hash}, project, until.UnixMilli(), now.UnixMilli()).Int()
	if err != nil {
		return true, until, fmt.Errorf("cool-down of project %s: %w", project, err)
	}
	if n == 0 {
		// Another worker's cool-down runs longer; Run will bring it here.
		return false, until, nil
	}
	return true, until, nil
}

// Until returns when the cool-down of project ends, as far as this worker
// knows; a time in the past when there is none.
func (l *Limiter) Until(project string) time.Time {
	if l.pauses.Load() == 0 {
		return time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until[project]
}

// Run hears of the cool-downs other workers start, until ctx ends.
func (l *Limiter) Run(ctx context.Context) {
	sub := l.rdb.Subscribe(ctx, l.hash)
	defer sub.Close()
	msgs := sub.Channel()
	l.sync(ctx)
	tick := time.NewTicker(l.opts.SyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			project, ms, found := strings.Cut(m.Payload, " ")
			if v, err := strconv.ParseInt(ms, 10, 64); found && err == nil {
				l.extend(project, time.UnixMilli(v))
			}
		case <-tick.C:
			l.sync(ctx)
		}
	}
}

// sync reads every cool-down from Redis.
func (l *Limiter) sync(ctx context.Context) {
	all, err := l.rdb.HGetAll(ctx, l.hash).Result()
	if err != nil {
		if ctx.Err() == nil {
			l.fail(fmt.Errorf("read cool-downs: %w", err))
		}
		return
	}
	for project, ms := range all {
		if v, err := strconv.ParseInt(ms, 10, 64); err == nil {
			l.extend(project, time.UnixMilli(v))
		}
	}
}

// extend records a cool-down of project until the given time, unless the
// one known ends later; it reports whether it did.
func (l *Limiter) extend(project string, until time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !until.After(l.until[project]) {
		return false
	}
	l.until[project] = until
	now := l.opts.Now()
	for p, u := range l.until { // forget the cool-downs that ended
		if !u.After(now) {
			delete(l.until, p)
		}
	}
	l.pauses.Store(int32(len(l.until)))
	return true
}

func (l *Limiter) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-l.opts.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Limiter) fail(err error) {
	if l.opts.OnError != nil {
		l.opts.OnError(err)
	}
}

// coolDownScript records a cool-down of a project unless one already runs
// longer, publishes it, and forgets the cool-downs that have ended.
//
// KEYS: 1 the cool-downs hash, also the channel. ARGV: 1 project ID, 2 end
// of the cool-down (Unix ms), 3 now (Unix ms).
// Returns 1 when it recorded the cool-down, 0 when one runs longer.
var coolDownScript = redis.NewScript(`
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local untilMs, now = tonumber(ARGV[2]), tonumber(ARGV[3])
if untilMs <= cur then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local all, last = redis.call('HGETALL', KEYS[1]), untilMs
for i = 1, #all, 2 do
  local u = tonumber(all[i + 1])
  if u <= now then redis.call('HDEL', KEYS[1], all[i]) elseif u > last then last = u end
end
redis.call('PEXPIREAT', KEYS[1], last)
redis.call('PUBLISH', KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
return 1
`)
