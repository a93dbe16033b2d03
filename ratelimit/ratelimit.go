// Package ratelimit keeps a fleet of workers within the Login API's rate
// limits, which the API applies per Login project (and per method and IP):
//
//   - A 429 starts a cool-down of its project on every worker that shares
//     the Redis: none of them calls the API for that project until the
//     cool-down ends. The worker that got the 429 sends its length to Redis,
//     which records the end on its own clock and publishes what remains of
//     it; the others hear of it at once over Pub/Sub (Start), and read what
//     remains of every cool-down when they start and every SyncInterval, so
//     that a message missed during a reconnect is caught up.
//   - Options.Rate, when set, caps the calls per second for one project
//     across the fleet (GCRA, github.com/go-redis/redis_rate): one Redis
//     round trip per call.
//
// Wait holds a call back for at most MaxWait (1s by default); a longer
// pause is handed back to the caller, which gives its worker slot up and
// comes back later, so that one project's pause does not hold up the
// others. Until the first 429, and without a Rate, Wait costs no Redis
// round trip.
//
// # Clocks
//
// A worker's clock and Redis's clock are never compared. Only durations
// travel between them: a cool-down goes to Redis as its length, Redis
// records its end on its own clock (TIME) and answers with what remains of
// it, which the worker adds to its own clock. A worker whose clock is off
// thus pauses exactly as long as the others.
//
// Redis keys (with the default prefix): resendq:cooldowns (hash: project ID
// → end of its cool-down, Unix ms on Redis's clock) and
// rate:resendq:rate:{project} (the GCRA state); the channel is
// resendq:cooldowns.
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
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
)

// Defaults of Options.
const (
	DefaultMaxCoolDown  = 5 * time.Minute
	DefaultMaxWait      = time.Second
	DefaultSyncInterval = 10 * time.Second
)

// Options configure a Limiter. Zero values are defaults.
type Options struct {
	// Rate is the most calls per second to the API for one project, across
	// every worker on this Redis. 0: no limit.
	Rate int
	// MaxCoolDown caps one cool-down, whatever the Retry-After, and those
	// heard of from other workers. Default 5m; negative: no cool-downs (a
	// 429 only delays its own task, and other workers' are ignored).
	MaxCoolDown time.Duration
	// MaxWait is the longest Wait waits; a longer wait is handed back to
	// the caller, which should come back later rather than hold its worker
	// slot (and starve the other projects). Default 1s.
	MaxWait time.Duration
	// SyncInterval is how often a started Limiter reads the cool-downs from Redis besides
	// the messages it hears. Default 10s.
	SyncInterval time.Duration
	// KeyPrefix prefixes the Redis keys and channel. Default "resendq:".
	KeyPrefix string
	// OnError is told when Redis fails the limiter; calls then go ahead
	// (the API's own 429s still hold them back). Default: ignored.
	OnError func(error)
	// Clock is the worker's clock: the end of a pause as this worker knows
	// it, and the waits for it. Default: the real clock.
	Clock clockwork.Clock
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

// New returns a Limiter on rdb. Call Start to hear of other workers'
// cool-downs.
func New(rdb redis.UniversalClient, opts Options) *Limiter {
	if opts.MaxCoolDown == 0 {
		opts.MaxCoolDown = DefaultMaxCoolDown
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "resendq:"
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
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
// waits MaxWait at most: when the call may go only later, it returns how
// much later (later > 0) without waiting, and the caller comes back then. It
// returns ctx's error if ctx ends first.
func (l *Limiter) Wait(ctx context.Context, project string) (later time.Duration, err error) {
	for {
		if d := l.Paused(project); d > 0 {
			if d > l.opts.MaxWait {
				return d, nil
			}
			if err := l.sleep(ctx, d); err != nil {
				return 0, err
			}
			continue
		}
		if l.rate == nil {
			return 0, nil
		}
		res, err := l.rate.Allow(ctx, l.ratePfx+project, redis_rate.PerSecond(l.opts.Rate))
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			l.fail(fmt.Errorf("rate limit of project %s: %w", project, err))
			return 0, nil
		}
		if res.Allowed > 0 {
			return 0, nil
		}
		if res.RetryAfter > l.opts.MaxWait {
			return res.RetryAfter, nil
		}
		if err := l.sleep(ctx, res.RetryAfter); err != nil {
			return 0, err
		}
	}
}

// Paused returns how long the cool-down of project still runs, as far as
// this worker knows; 0 when there is none. It costs no Redis round trip.
func (l *Limiter) Paused(project string) time.Duration {
	if l.pauses.Load() == 0 {
		return 0
	}
	return max(l.Until(project).Sub(l.opts.Clock.Now()), 0)
}

// CoolDown pauses the calls for project on every worker for d (at most
// MaxCoolDown), unless a cool-down already runs longer. It reports whether
// it started or extended one, and when the cool-down ends (on this
// worker's clock).
func (l *Limiter) CoolDown(ctx context.Context, project string, d time.Duration) (started bool, until time.Time, err error) {
	d = min(d, l.opts.MaxCoolDown).Truncate(time.Millisecond)
	if l.opts.MaxCoolDown < 0 || d <= 0 {
		return false, time.Time{}, nil
	}
	now := l.opts.Clock.Now()
	until = now.Add(d)
	if !l.extend(project, until) {
		return false, l.Until(project), nil
	}
	res, err := coolDownScript.Run(ctx, l.rdb, []string{l.hash}, project, d.Milliseconds()).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	if err != nil {
		return true, until, fmt.Errorf("cool-down of project %s: %w", project, err)
	}
	if res[0] == 0 {
		// Another worker's cool-down runs longer.
		longer := now.Add(time.Duration(res[1]) * time.Millisecond)
		l.extend(project, longer)
		return false, l.Until(project), nil
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

// Start subscribes to the cool-downs other workers start and reads those
// that run, then goes on hearing of them in the background until ctx ends.
// Call it before the worker takes tasks, so that a worker started during a
// cool-down keeps it.
func (l *Limiter) Start(ctx context.Context) error {
	sub := l.rdb.Subscribe(ctx, l.hash)
	if _, err := sub.Receive(ctx); err != nil { // the subscription is confirmed
		_ = sub.Close()
		return fmt.Errorf("rate limiting: subscribe to %s: %w", l.hash, err)
	}
	if err := l.sync(ctx); err != nil {
		_ = sub.Close()
		return err
	}
	go l.listen(ctx, sub)
	return nil
}

// listen hears of cool-downs on sub, and reads them all every
// SyncInterval, until ctx ends.
func (l *Limiter) listen(ctx context.Context, sub *redis.PubSub) {
	defer sub.Close()
	msgs := sub.Channel()
	tick := l.opts.Clock.NewTicker(l.opts.SyncInterval)
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
				l.extend(project, l.opts.Clock.Now().Add(time.Duration(v)*time.Millisecond))
			}
		case <-tick.Chan():
			if err := l.sync(ctx); err != nil && ctx.Err() == nil {
				l.fail(err)
			}
		}
	}
}

// sync reads every cool-down that runs from Redis.
func (l *Limiter) sync(ctx context.Context) error {
	res, err := remainingScript.Run(ctx, l.rdb, []string{l.hash}).StringSlice()
	if err != nil {
		return fmt.Errorf("rate limiting: read cool-downs: %w", err)
	}
	now := l.opts.Clock.Now()
	for i := 0; i+1 < len(res); i += 2 {
		if v, err := strconv.ParseInt(res[i+1], 10, 64); err == nil {
			l.extend(res[i], now.Add(time.Duration(v)*time.Millisecond))
		}
	}
	return nil
}

// extend records a cool-down of project until the given time (at most
// MaxCoolDown from now: a worker with a larger MaxCoolDown pauses this one
// no longer), unless the one known ends later; it reports whether it did.
func (l *Limiter) extend(project string, until time.Time) bool {
	now := l.opts.Clock.Now()
	if limit := now.Add(l.opts.MaxCoolDown); until.After(limit) {
		until = limit
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !until.After(l.until[project]) {
		return false
	}
	l.until[project] = until
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
	case <-l.opts.Clock.After(d):
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
// longer, publishes what remains of it, and forgets the cool-downs that have
// ended. Ends are kept on Redis's clock; only lengths come in and go out.
//
// KEYS: 1 the cool-downs hash, also the channel. ARGV: 1 project ID, 2 length
// of the cool-down (ms).
// Returns {1, the length} when it recorded the cool-down, {0, what remains
// of the longer one (ms)} otherwise.
var coolDownScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') or 0
local untilMs = now + tonumber(ARGV[2])
if untilMs <= cur then return {0, cur - now} end
redis.call('HSET', KEYS[1], ARGV[1], untilMs)
local all, last = redis.call('HGETALL', KEYS[1]), untilMs
for i = 1, #all, 2 do
  local u = tonumber(all[i + 1]) or 0
  if u <= now then redis.call('HDEL', KEYS[1], all[i]) elseif u > last then last = u end
end
redis.call('PEXPIRE', KEYS[1], last - now)
redis.call('PUBLISH', KEYS[1], ARGV[1] .. ' ' .. ARGV[2])
return {1, tonumber(ARGV[2])}
`)

// remainingScript lists what remains of every cool-down that runs.
//
// KEYS: 1 the cool-downs hash. Returns a flat list of project ID, remaining
// ms.
var remainingScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all, out = redis.call('HGETALL', KEYS[1]), {}
for i = 1, #all, 2 do
  local u = tonumber(all[i + 1]) or 0
  if u > now then
    out[#out + 1] = all[i]
    out[#out + 1] = tostring(u - now)
  end
end
return out
`)
