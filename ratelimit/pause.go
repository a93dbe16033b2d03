package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// CoolDown pauses the calls for project on every worker for d (at most
// MaxCoolDown), unless a pause already runs longer, and, for a project
// whose rate adapts, lowers the rate (see the package documentation). It
// reports whether it started or extended a pause, and when the pause ends
// (on this worker's clock).
func (l *Limiter) CoolDown(ctx context.Context, name string, d time.Duration) (started bool, until time.Time, err error) {
	if l.adaptive(name) {
		if derr := l.decrease(ctx, l.project(name)); derr != nil {
			l.fail(derr)
		}
	}
	d = min(d, l.opts.MaxCoolDown).Truncate(time.Millisecond)
	if l.opts.MaxCoolDown < 0 || d <= 0 {
		return false, time.Time{}, nil
	}
	now := l.opts.Clock.Now()
	until = now.Add(d)
	if !l.extend(name, until) {
		return false, l.Until(name), nil
	}
	res, err := coolDownScript.Run(ctx, l.rdb, []string{l.keys.cooldown}, name, d.Milliseconds(), l.keys.channel).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	if err != nil {
		return true, until, fmt.Errorf("cool-down of project %s: %w", name, err)
	}
	if res[0] == 0 {
		// Another worker's pause runs longer.
		l.extend(name, now.Add(time.Duration(res[1])*time.Millisecond))
		return false, l.Until(name), nil
	}
	return true, until, nil
}

// extend records a pause of project until the given time (at most
// MaxCoolDown from now: a worker with a larger MaxCoolDown pauses this one
// no longer), unless the one known ends later; it reports whether it did.
func (l *Limiter) extend(name string, until time.Time) bool {
	if l.opts.MaxCoolDown < 0 {
		return false
	}
	p := l.project(name)
	longer := false
	l.update(p, func(now time.Time) {
		until = minTime(until, now.Add(l.opts.MaxCoolDown))
		if until.After(p.pauseUntil) {
			p.pauseUntil, longer = until, true
		}
	})
	return longer
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// sync reads the state of every project from Redis: pauses, circuits,
// watches and adaptive rates, as what remains of each on Redis's clock.
func (l *Limiter) sync(ctx context.Context) error {
	k := l.keys
	res, err := stateScript.Run(ctx, l.rdb, []string{k.cooldown, k.circuits, k.watch, k.rates, k.closes},
		l.opts.RateMemory.Milliseconds()).StringSlice()
	if err != nil {
		return fmt.Errorf("rate limiting: read the fleet's state: %w", err)
	}
	open := map[string]time.Duration{}
	rates := map[string]bool{} // the projects Redis has a rate of, or learns one
	for i := 0; i+4 < len(res); i += 5 {
		// First the circuits that closed since this worker last heard: the
		// failures it counted before are forgotten (not what came since).
		if v, err := strconv.ParseInt(res[i+2], 10, 64); err == nil && res[i] == "closes" {
			l.adopt(l.project(res[i+1]), v)
		}
	}
	for i := 0; i+4 < len(res); i += 5 {
		kind, name := res[i], res[i+1]
		v, err := strconv.ParseFloat(res[i+2], 64)
		if err != nil {
			continue
		}
		ms := time.Duration(v) * time.Millisecond
		switch kind {
		case "pause":
			l.extend(name, l.opts.Clock.Now().Add(ms))
		case "open":
			open[name] = ms
		case "watch":
			p := l.project(name)
			l.update(p, func(now time.Time) { p.watchUntil = now.Add(ms) })
		case "rate":
			rates[name] = true
			if v > 0 && l.adaptive(name) {
				p := l.project(name)
				l.update(p, func(time.Time) { p.rate = l.capped(v) })
			}
		}
	}
	l.projects.Range(func(_, v any) bool {
		p := v.(*project)
		age, isOpen := open[p.name]
		l.update(p, func(now time.Time) {
			if !rates[p.name] && l.adaptive(p.name) {
				p.rate = 0 // forgotten: the fleet learns it again at the next 429
			}
			if l.opts.ProbeInterval < 0 {
				return
			}
			switch {
			case isOpen && p.openAt.IsZero():
				p.openAt, p.nextProbe = now.Add(-age), now
			case !isOpen:
				p.openAt = time.Time{}
			}
		})
		return true
	})
	if l.opts.ProbeInterval < 0 {
		return nil
	}
	for name, age := range open {
		p := l.project(name)
		l.update(p, func(now time.Time) {
			if p.openAt.IsZero() {
				p.openAt, p.nextProbe = now.Add(-age), now
			}
		})
	}
	return nil
}

// coolDownScript records a pause of a project unless one already runs
// longer, publishes what remains of it, and forgets the pauses that have
// ended. Ends are kept on Redis's clock; only lengths come in and go out.
//
// KEYS: 1 the pauses hash. ARGV: 1 project ID, 2 length of the pause (ms),
// 3 the channel.
// Returns {1, the length} when it recorded the pause, {0, what remains of
// the longer one (ms)} otherwise.
var coolDownScript = redis.NewScript(nowMs + `
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
redis.call('PUBLISH', ARGV[3], 'pause ' .. ARGV[1] .. ' ' .. ARGV[2])
return {1, tonumber(ARGV[2])}
`)
