package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

const (
	// learnTime is how long the workers have to report their calls after
	// a project's first 429, before its rate is set from them.
	learnTime = 200 * time.Millisecond
	// rateGap is the least time between two decreases of a rate: the 429s
	// of one wave lower it once.
	rateGap = time.Second
	// rateQuiet is how long after a decrease a rate stays as it is.
	rateQuiet = 2 * time.Second
)

// limitOf is the GCRA limit of a rate in calls per second: spaced evenly,
// with a burst of a twentieth of a second's calls.
func limitOf(rate float64) redis_rate.Limit {
	return redis_rate.Limit{
		Rate:   max(1, int(math.Round(rate*10))),
		Period: 10 * time.Second,
		Burst:  max(1, int(rate/20)),
	}
}

// capped is an adaptive rate within MaxRate.
func (l *Limiter) capped(r float64) float64 {
	if l.opts.MaxRate > 0 && r > float64(l.opts.MaxRate) {
		return float64(l.opts.MaxRate)
	}
	return r
}

// decrease lowers the adaptive rate of p after a 429, or, for a project
// without a rate yet, starts learning one.
func (l *Limiter) decrease(ctx context.Context, p *project) error {
	now := l.opts.Clock.Now()
	p.mu.Lock()
	t := p.window.counts(now)
	closes := p.closes
	// How long calls have gone out since the last pause: what got through
	// in the last second says nothing of the limit if part of it was paused.
	sending := now.Sub(p.pauseUntil).Milliseconds()
	if p.pauseUntil.IsZero() {
		sending = math.MaxInt32
	}
	p.mu.Unlock()
	k := l.keys
	res, err := decreaseScript.Run(ctx, l.rdb, []string{k.rates, k.counts(p.name), k.closes},
		p.name, l.opts.WorkerID, t.s1, t.sw, t.fw, l.opts.Decrease, MinRate, l.opts.MaxRate,
		rateGap.Milliseconds(), learnTime.Milliseconds(), k.channel, l.opts.OutageWindow.Milliseconds(), t.f1, closes,
		max(sending, 0),
	).StringSlice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	if err != nil {
		return fmt.Errorf("rate limiting: lower the rate of project %s: %w", p.name, err)
	}
	l.setRate(p, res)
	return nil
}

// learn is a worker's part in learning the rate of p after its first 429
// (Redis has no rate for it: any this worker knows is forgotten): report
// the calls it got through, and a moment later set the rate from every
// worker's report (once, fleet-wide).
func (l *Limiter) learn(ctx context.Context, p *project) {
	p.mu.Lock()
	if p.learning {
		p.mu.Unlock()
		return
	}
	p.learning, p.rate = true, 0
	p.setFlags(l.opts.Clock.Now())
	p.mu.Unlock()
	l.reportCalls(ctx, p)
	// Calls under way when the 429 came count once they are answered: a
	// second report halfway, before the rate is set.
	l.opts.Clock.AfterFunc(learnTime/2, func() {
		if ctx.Err() == nil {
			l.reportCalls(ctx, p)
		}
	})
	l.settle(ctx, p, learnTime, 3)
}

// reportCalls reports the counts of p if this worker made calls in the
// window.
func (l *Limiter) reportCalls(ctx context.Context, p *project) {
	p.mu.Lock()
	t := p.window.counts(l.opts.Clock.Now())
	p.mu.Unlock()
	if t.s1+t.sw+t.fw == 0 {
		return
	}
	if _, err := l.report(ctx, p); err != nil && ctx.Err() == nil {
		l.fail(err)
	}
}

// settle sets the rate of p from the workers' reports after wait, once the
// learning time has passed on Redis's clock (tries: how many times it
// looks again if it has not yet). Whatever the answer, this worker's part
// in the learning ends.
func (l *Limiter) settle(ctx context.Context, p *project, wait time.Duration, tries int) {
	l.opts.Clock.AfterFunc(wait, func() {
		if ctx.Err() != nil {
			return
		}
		res, err := settleScript.Run(ctx, l.rdb, []string{l.keys.rates, l.keys.counts(p.name)},
			p.name, l.opts.Decrease, MinRate, l.opts.MaxRate, l.keys.channel, l.opts.OutageWindow.Milliseconds(),
		).StringSlice()
		if err == nil && len(res) != 3 {
			err = fmt.Errorf("unexpected reply %v", res)
		}
		if err == nil && res[1] == "2" && tries > 1 {
			// Not yet on Redis's clock: res[2] ms to go.
			left, _ := strconv.ParseFloat(res[2], 64)
			l.settle(ctx, p, ms(left)+10*time.Millisecond, tries-1)
			return
		}
		l.update(p, func(time.Time) { p.learning = false })
		if err != nil {
			if ctx.Err() == nil {
				l.fail(fmt.Errorf("rate limiting: set the rate of project %s: %w", p.name, err))
			}
			return
		}
		if res[1] != "2" {
			l.setRate(p, res)
		}
	})
}

// setRate takes in the reply {rate, changed, rate before} of the decrease
// and settle scripts: changed is 1 when this worker set the rate, 2 when
// it started learning one.
func (l *Limiter) setRate(p *project, res []string) {
	rate, _ := strconv.ParseFloat(res[0], 64)
	was, _ := strconv.ParseFloat(res[2], 64)
	l.update(p, func(time.Time) {
		if rate > 0 {
			p.rate, p.learning = l.capped(rate), false
		}
	})
	if res[1] == "1" {
		l.toldRate(p, was, true)
	}
}

// toldRate tells OnEvent of p's new rate when this worker set it: always
// after a 429 (force), after growth only once it is a quarter above the
// rate last told of.
func (l *Limiter) toldRate(p *project, was float64, force bool) {
	p.mu.Lock()
	rate := p.rate
	tell := force || rate >= 1.25*p.told
	if tell {
		p.told = rate
	}
	p.mu.Unlock()
	if tell {
		l.event(Event{Kind: RateChanged, Project: p.name, Rate: rate, Was: was})
	}
}

// rateLua reads and writes a project's entry of the rates hash: "rate
// changed_at decreased_at learn_until ceiling slow_start quiet", times in
// ms on Redis's clock. rate 0 with learn_until set: being learned.
// ceiling: what got through when the last 429 came, which the rate climbs
// back toward after it; slow_start 1: learned, not yet lowered, the rate
// grows fast; quiet: how long after a decrease the rate stays below its
// ceiling before it probes above.
const rateLua = `
local quietFirst, quietMax = 30000, 300000
local function readRate(key, p)
  local v = redis.call('HGET', key, p)
  if not v then return nil end
  local f = {}
  for x in string.gmatch(v, '%S+') do f[#f + 1] = tonumber(x) or 0 end
  local q = f[7] or 0
  if q <= 0 then q = quietFirst end
  return {rate = f[1] or 0, at = f[2] or 0, dec = f[3] or 0, learn = f[4] or 0, ceil = f[5] or 0, ss = f[6] or 0, q = q}
end
local function writeRate(key, p, r, channel)
  redis.call('HSET', key, p, string.format('%.3f', r.rate) .. ' ' .. r.at .. ' ' .. r.dec .. ' ' .. r.learn .. ' ' ..
    string.format('%.3f', r.ceil) .. ' ' .. r.ss .. ' ' .. (r.q or quietFirst))
  if r.rate > 0 then redis.call('PUBLISH', channel, 'rate ' .. p .. ' ' .. string.format('%.3f', r.rate)) end
end
local function fmt(x) return string.format('%.3f', x) end
`

// decreaseScript lowers a project's adaptive rate after a 429: to the lower
// of the rate and what the fleet got through in the last second (which
// becomes its ceiling; unless that was less than half the rate, or a pause
// ended within that second: then the fleet was not sending at its rate,
// and the rate is the ceiling), times
// the decrease, at most once a gap; it ends the slow start. When the
// ceiling is where it was (a probe above it found the same limit), the
// quiet time before the next probe doubles, up to 5 minutes; else it is
// 30s. A project without a rate starts learning one: every worker
// is asked to report, and settleScript sets it.
//
// KEYS: 1 rates, 2 the project's counts, 3 closes. ARGV: 1 project,
// 2 worker, 3 s1, 4 sw, 5 fw, 6 decrease (a factor), 7 least rate, 8 max
// rate (0: none), 9 gap ms, 10 learn ms, 11 channel, 12 window ms, 13 f1,
// 14 the closes the worker counted since, 15 ms the worker has been sending
// since the last pause ended.
// Returns strings {the rate (0: none yet), 1 when this call changed it, 2
// when it started learning, else 0; the rate before}.
var decreaseScript = redis.NewScript(nowMs + countsLua + rateLua + `
local P = ARGV[1]
local S1 = counts(KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5], '0', ARGV[13], tonumber(ARGV[12]), KEYS[3], P, ARGV[14])
local r = readRate(KEYS[1], P)
if not r or r.rate <= 0 then
  if r and now <= r.learn + 5000 then return {'0', '0', '0'} end -- learning (or a learning left unsettled a while ago: start again)
  writeRate(KEYS[1], P, {rate = 0, at = now, dec = 0, learn = now + tonumber(ARGV[10]), ceil = 0, ss = 0}, ARGV[11])
  redis.call('PUBLISH', ARGV[11], 'learn ' .. P)
  return {'0', '2', '0'}
end
if now - r.dec < tonumber(ARGV[9]) then return {fmt(r.rate), '0', fmt(r.rate)} end
local was, base = r.rate, r.rate
-- What got through a second: over the last second, or the part of it
-- since the last pause ended; nothing can be told from less than half a
-- second.
local sending, got = tonumber(ARGV[15]), nil
if sending >= 500 then got = S1 * 1000 / math.min(sending, 1000) end
local factor = tonumber(ARGV[6])
local q = quietFirst
if r.ss == 1 then
  -- The end of the slow start: the fleet sent as fast as the rate let it,
  -- up to the limit and past it. What got through is about the limit, and
  -- the burst the API allows over it (taken as 3%, below which the rate
  -- climbs back).
  if got and got > 0 and got < base then base = got * 0.97 end
  factor = (1 + factor) / 2
else
  -- What got through is the ceiling only if the fleet was sending at about
  -- its rate; far less means the 429 met a burst (held calls coming back
  -- after a pause or an outage), and the rate itself is lowered.
  if got and got >= base / 2 and got < base then base = got end
  if r.ceil > 0 and math.abs(base - r.ceil) <= 0.05 * r.ceil then
    -- A probe above the ceiling found it where it was: probe half as often.
    q = math.min(r.q * 2, quietMax)
  end
end
local new = math.max(tonumber(ARGV[7]), base * factor)
local cap = tonumber(ARGV[8])
if cap > 0 and new > cap then new = cap end
writeRate(KEYS[1], P, {rate = new, at = now, dec = now, learn = 0, ceil = base, ss = 0, q = q}, ARGV[11])
return {fmt(new), '1', fmt(was)}
`)

// settleScript sets a project's rate once it has learned: what the fleet
// got through in the last second, times the decrease, in slow start. When
// nothing got through, it sets none.
//
// KEYS: 1 rates, 2 the project's counts. ARGV: 1 project, 2 decrease (a
// factor), 3 least rate, 4 max rate (0: none), 5 channel, 6 window ms.
// Returns strings {the rate (0: none), 1 when this call set it, else 0;
// the rate before}, or {'0', '2', ms to go} while the learning time has not
// passed.
var settleScript = redis.NewScript(nowMs + rateLua + `
local P = ARGV[1]
local r = readRate(KEYS[1], P)
if not r then return {'0', '0', '0'} end
if r.rate > 0 then return {fmt(r.rate), '0', fmt(r.rate)} end
if now < r.learn then return {'0', '2', tostring(r.learn - now)} end
local S1 = 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local t, a = string.match(all[i + 1], '^(%d+) (%d+)')
  if tonumber(t) and now - tonumber(t) <= 1500 then S1 = S1 + tonumber(a) end
end
if S1 == 0 then
  -- Nothing got through before the 429: nothing to learn from; the next
  -- 429 starts over.
  redis.call('HDEL', KEYS[1], P)
  return {'0', '0', '0'}
end
local new = math.max(tonumber(ARGV[3]), S1 * tonumber(ARGV[2]))
local cap = tonumber(ARGV[4])
if cap > 0 and new > cap then new = cap end
writeRate(KEYS[1], P, {rate = new, at = now, dec = 0, learn = 0, ceil = 0, ss = 1}, ARGV[5])
return {fmt(new), '1', '0'}
`)
