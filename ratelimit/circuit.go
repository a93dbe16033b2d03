package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// probeLead is how long before the next probe's slot a held-back call is
// asked to come back (at most half the ProbeInterval): asynq brings a retry
// back on a whole second and its forwarder's next round, up to 1.5s after
// it is due, so the calls of an outage come back before the slot, and one
// of them waits in its worker for it, so that the probe goes out on time.
const probeLead = 1500 * time.Millisecond

// lead is the probeLead of l.
func (l *Limiter) lead() time.Duration { return min(probeLead, l.opts.ProbeInterval/2) }

// holdFor is the Permit of a call held back by an outage whose next probe
// is wait away: come back a lead before it.
func (l *Limiter) holdFor(wait time.Duration) Permit {
	return Permit{Later: max(wait-l.lead(), time.Millisecond), Hold: HoldOutage}
}

// window counts this worker's calls of one project in slots of 100ms,
// over the outage window.
type window struct {
	slots      []int64 // which 100ms period (Unix ms / 100) each slot counts
	succ, fail []int32
}

const slotMs = 100

func newWindow(w time.Duration) window {
	n := max(int(w.Milliseconds()/slotMs), 10)
	return window{slots: make([]int64, n), succ: make([]int32, n), fail: make([]int32, n)}
}

// add counts one call at now.
func (w *window) add(now time.Time, failed bool) {
	period := now.UnixMilli() / slotMs
	i := int(period % int64(len(w.slots)))
	if w.slots[i] != period {
		w.slots[i], w.succ[i], w.fail[i] = period, 0, 0
	}
	if failed {
		w.fail[i]++
	} else {
		w.succ[i]++
	}
}

// tally is what a worker's window says: its successes and failures a
// second over the last second or so (the last ten slots and the current
// one, per second of the time they cover), and over the whole window.
type tally struct{ s1, f1, sw, fw int }

// counts returns the window's tally as of now.
func (w *window) counts(now time.Time) tally {
	ms := now.UnixMilli()
	period := ms / slotMs
	var t tally
	for i, p := range w.slots {
		age := period - p
		if age < 0 || age >= int64(len(w.slots)) {
			continue
		}
		t.sw += int(w.succ[i])
		t.fw += int(w.fail[i])
		if age <= 1000/slotMs {
			t.s1 += int(w.succ[i])
			t.f1 += int(w.fail[i])
		}
	}
	covered := float64(1000 + ms%slotMs) // ten whole slots and the current one so far
	t.s1 = int(math.Round(float64(t.s1) * 1000 / covered))
	t.f1 = int(math.Round(float64(t.f1) * 1000 / covered))
	return t
}

// report sends this worker's counts of p to Redis, where the circuit
// decides and an adaptive rate may grow, and takes in the answer.
func (l *Limiter) report(ctx context.Context, p *project) (Verdict, error) {
	now := l.opts.Clock.Now()
	p.mu.Lock()
	t := p.window.counts(now)
	waited, closes := p.waited, p.closes
	p.waited = false
	p.mu.Unlock()
	k := l.keys
	res, err := reportScript.Run(ctx, l.rdb,
		[]string{k.circuits, k.watch, k.rates, k.counts(p.name), k.probe(p.name), k.closes},
		p.name, l.opts.WorkerID, t.s1, t.sw, t.fw, btoi(waited),
		l.opts.OutageWindow.Milliseconds(), l.opts.OutageMinFailures, l.opts.OutageThreshold,
		l.opts.SettleTime.Milliseconds(), max(l.opts.ProbeInterval, 0).Milliseconds(),
		btoi(l.adaptive(p.name)), l.opts.MaxRate, l.opts.Increase, rateQuiet.Milliseconds(), k.channel, t.f1, closes,
	).StringSlice()
	if err == nil && len(res) != 10 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	if err != nil {
		return Verdict{}, fmt.Errorf("rate limiting: report the calls of project %s: %w", p.name, err)
	}
	n := make([]float64, len(res))
	for i, v := range res {
		n[i], _ = strconv.ParseFloat(v, 64)
	}
	open, dominate, opened, age, probe := n[0] == 1, n[0] == 2, n[1] == 1, ms(n[2]), ms(n[3])
	if c := int64(n[9]); c != closes {
		// The circuit closed since this worker last heard: its counts were
		// stale and left out, and its window starts over.
		l.adopt(p, c)
	}
	var was float64
	l.update(p, func(now time.Time) {
		switch {
		case open && p.openAt.IsZero():
			p.openAt, p.nextProbe = now.Add(-age), now.Add(probe)
		case !open:
			p.openAt = time.Time{}
		}
		p.watchUntil = now.Add(ms(n[8]))
		if dominate {
			p.suspect = now.Add(l.opts.SettleTime)
		}
		if n[7] == 1 {
			was = p.rate
			p.rate = l.capped(n[6])
		}
	})
	if opened {
		l.event(Event{Kind: CircuitOpened, Project: p.name, Failures: int(n[4]), Calls: int(n[5])})
	}
	if n[7] == 1 {
		l.toldRate(p, was, false)
	}
	switch {
	case open:
		return Verdict{Outage: true, Later: l.holdFor(probe).Later}, nil
	case dominate:
		// Most likely an outage, about to be declared once every worker
		// has reported: the failure spends no attempt of its task, and this
		// worker holds its calls back until then.
		return Verdict{Outage: true, Later: l.holdFor(l.opts.SettleTime + l.opts.ProbeInterval).Later}, nil
	}
	return Verdict{}, nil
}

// reportWatched reports the counts of every project the fleet watches (a
// recent failure somewhere) or that has an adaptive rate, when this worker
// called it within the window.
func (l *Limiter) reportWatched(ctx context.Context) {
	now := l.opts.Clock.Now()
	l.projects.Range(func(_, v any) bool {
		p := v.(*project)
		p.mu.Lock()
		due := now.Sub(p.lastCall) < l.opts.OutageWindow && (p.watchUntil.After(now) || p.rate > 0 && l.adaptive(p.name))
		if due {
			t := p.window.counts(now)
			due = t.sw+t.fw > 0
		}
		p.mu.Unlock()
		if due {
			if _, err := l.report(ctx, p); err != nil && ctx.Err() == nil {
				l.fail(err)
			}
		}
		return true
	})
}

// close closes the circuit of p after a call was answered, if it is open.
func (l *Limiter) close(ctx context.Context, p *project) error {
	k := l.keys
	res, err := closeScript.Run(ctx, l.rdb, []string{k.circuits, k.probe(p.name), k.counts(p.name), k.watch, k.closes},
		p.name, k.channel).Int64Slice()
	if err == nil && len(res) != 3 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	if err != nil {
		return fmt.Errorf("rate limiting: close the circuit of project %s: %w", p.name, err)
	}
	l.adopt(p, res[2])
	if res[0] == 1 {
		l.event(Event{Kind: CircuitClosed, Project: p.name, Open: time.Duration(res[1]) * time.Millisecond})
	} else {
		l.update(p, func(time.Time) { p.openAt = time.Time{} })
	}
	return nil
}

// adopt takes in that the circuit of p has closed closes times: when that
// is news to this worker, the circuit closed since it last heard, and the
// failures counted before are forgotten, so that they do not open it
// again.
func (l *Limiter) adopt(p *project, closes int64) {
	l.update(p, func(time.Time) {
		if p.closes != closes {
			p.closes = closes
			p.openAt, p.watchUntil, p.suspect = time.Time{}, time.Time{}, time.Time{}
			p.window = newWindow(l.opts.OutageWindow)
		}
	})
}

// probe decides a call of p while its circuit is open: the fleet's one
// probe of this ProbeInterval, or held back until a lead before the next.
// The first call of this worker to come within a lead of the next probe
// waits for it in its slot (the worker's probe waiter); the others go back
// at once, for the probe after.
func (l *Limiter) probe(ctx context.Context, p *project, now time.Time) (Permit, error) {
	p.mu.Lock()
	wait := p.nextProbe.Sub(now)
	waiter := wait > 0 && wait <= l.lead() && !p.probeWaiter
	if waiter {
		p.probeWaiter = true
	}
	p.mu.Unlock()
	switch {
	case waiter:
		defer l.update(p, func(time.Time) { p.probeWaiter = false })
		if err := l.sleep(ctx, wait); err != nil {
			return Permit{}, err
		}
	case wait > l.lead():
		return l.holdFor(wait), nil
	case wait > 0: // another call of this worker waits for this probe
		return l.holdFor(wait + l.opts.ProbeInterval), nil
	}
	res, err := probeScript.Run(ctx, l.rdb, []string{l.keys.circuits, l.keys.probe(p.name)},
		p.name, l.opts.WorkerID, l.opts.ProbeInterval.Milliseconds()).Int64Slice()
	if err == nil && len(res) != 2 {
		err = fmt.Errorf("unexpected reply %v", res)
	}
	if err != nil {
		if ctx.Err() != nil {
			return Permit{}, ctx.Err()
		}
		l.fail(fmt.Errorf("rate limiting: probe of project %s: %w", p.name, err))
		return l.holdFor(l.opts.ProbeInterval), nil
	}
	next := time.Duration(res[1]) * time.Millisecond
	switch res[0] {
	case 2: // closed meanwhile
		l.update(p, func(time.Time) { p.openAt = time.Time{} })
		return Permit{}, nil
	case 1:
		l.update(p, func(now time.Time) { p.nextProbe = now.Add(next) })
		return Permit{Probe: true}, nil
	}
	l.update(p, func(now time.Time) { p.nextProbe = now.Add(next) })
	return l.holdFor(next), nil
}

func ms(v float64) time.Duration { return time.Duration(v) * time.Millisecond }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// countsLua stores a worker's tally of a project in its counts hash (key),
// unless it is stale (its closes are not the project's: the circuit closed
// since the worker counted, in the closes hash), and sums the fresh tallies
// of every worker: SW and FW over the window (w, in ms); S1, F1 (calls a
// second over the last second) and waited over the last 1.5s. Its entries:
// worker → "at s1 sw fw waited f1". Also returns the project's closes.
const countsLua = `
local function counts(key, worker, s1, sw, fw, waited, f1, w, closesKey, p, closes)
  local C = tonumber(redis.call('HGET', closesKey, p) or '0') or 0
  if tonumber(closes) ~= C then return 0, 0, 0, 0, 0, C, false end
  redis.call('HSET', key, worker, now .. ' ' .. s1 .. ' ' .. sw .. ' ' .. fw .. ' ' .. waited .. ' ' .. f1)
  redis.call('PEXPIRE', key, 6 * w)
  local S1, SW, FW, WT, F1 = 0, 0, 0, 0, 0
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local at, a, b, c, d, e = string.match(all[i + 1], '^(%d+) (%d+) (%d+) (%d+) (%d) (%d+)$')
    at = tonumber(at)
    if not at or now - at > w then
      redis.call('HDEL', key, all[i])
    else
      SW, FW = SW + tonumber(b), FW + tonumber(c)
      if now - at <= 1500 then
        S1, F1 = S1 + tonumber(a), F1 + tonumber(e)
        if d == '1' then WT = 1 end
      end
    end
  end
  return S1, SW, FW, WT, F1, C, true
end
`

// reportScript takes a worker's counts of a project: it opens the circuit
// when the fleet's failures dominate, keeps the project under watch while
// failures come, and grows an adaptive rate that calls wait for.
//
// KEYS: 1 circuits, 2 watches, 3 rates, 4 the project's counts, 5 its probe
// lease, 6 closes. ARGV: 1 project, 2 worker, 3 s1, 4 sw, 5 fw, 6 waited
// (0/1), 7 window ms, 8 min failures, 9 threshold (a fraction of the
// calls), 10 settle ms, 11 probe interval ms (0: no circuit), 12 adaptive
// (0/1), 13 max rate (0: none), 14 increase a second (once the quiet time
// has passed, and once more every 10s since, up to doubling), 15 ms after
// a decrease before the rate climbs back, 16
// channel, 17 f1, 18 the closes the worker counted since.
//
// While calls wait for a rate it grows: three times a second in slow start;
// else back toward 97% of its ceiling (a quarter of the gap every 250ms),
// where it stays until the quiet time has passed without a 429 (30s, twice
// as long each time a probe found the same ceiling); then by the increase,
// more the longer since.
//
// Returns strings: the circuit (0 closed, 1 open, 2 closed but failures
// dominate: it opens once the watch has settled), opened by this report
// (0/1), ms open, ms to the next probe, the window's failures, its calls,
// the adaptive rate, whether this report changed it (0/1), ms left of the
// watch, the project's closes (when not the worker's, its counts were
// stale and left out).
var reportScript = redis.NewScript(nowMs + countsLua + rateLua + `
local P, W = ARGV[1], tonumber(ARGV[7])
local S1, SW, FW, WT, F1, C, fresh = counts(KEYS[4], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[17], W, KEYS[6], P, ARGV[18])
local from, untilMs = 0, 0
local wv = redis.call('HGET', KEYS[2], P)
if wv then
  local a, b = string.match(wv, '^(%d+) (%d+)$')
  from, untilMs = tonumber(a) or 0, tonumber(b) or 0
end
if fresh and tonumber(ARGV[5]) > 0 then
  if untilMs < now then
    from = now
    redis.call('PUBLISH', ARGV[16], 'watch ' .. P .. ' ' .. W)
  end
  untilMs = now + W
  redis.call('HSET', KEYS[2], P, from .. ' ' .. untilMs)
end
local openAt, opened = nil, 0
local cv = redis.call('HGET', KEYS[1], P)
if cv then openAt = tonumber(string.match(cv, '^(%d+)')) end
local probe = tonumber(ARGV[11])
local minF, thr = tonumber(ARGV[8]), tonumber(ARGV[9])
-- The failures dominate the window's calls, or those of the last second
-- (an outage of a busy project shows at once, not when its failures
-- outnumber the window's earlier successes).
local dominate = probe > 0 and untilMs >= now and
  ((FW >= minF and FW >= thr * (SW + FW)) or (F1 >= minF and F1 >= thr * (S1 + F1)))
if not openAt and dominate and now - from >= tonumber(ARGV[10]) then
  openAt, opened = now, 1
  redis.call('HSET', KEYS[1], P, now .. ' ' .. FW .. ' ' .. (SW + FW))
  redis.call('SET', KEYS[5], ARGV[2], 'PX', probe)
  redis.call('PUBLISH', ARGV[16], 'open ' .. P)
end
local rate, changed = 0, 0
if ARGV[12] == '1' then
  local r = readRate(KEYS[3], P)
  if r then
    rate = r.rate
    if rate > 0 and not openAt and FW == 0 and WT == 1 and now - r.dec >= tonumber(ARGV[15]) then
      local target = r.ceil * 0.97
      if r.ss == 1 and now - r.at >= 250 then
        rate = rate * 1.32 -- slow start: three times a second
      elseif r.ss ~= 1 and rate < target and now - r.at >= 250 then
        rate = math.min(target, rate + math.max(target - rate, 0.4) * 0.25) -- back toward 97% of what got through before the last 429
      elseif r.ss ~= 1 and now - r.dec >= r.q and now - r.at >= 1000 then
        -- quiet for long enough without a 429: probe above it, Increase a
        -- second, and more every 10s it goes on
        rate = rate * (1 + math.min(1, tonumber(ARGV[14]) * (now - r.dec - r.q + 10000) / 10000))
      end
      local cap = tonumber(ARGV[13])
      if cap > 0 and rate > cap then rate = cap end
      if rate ~= r.rate then
        r.rate, r.at = rate, now
        writeRate(KEYS[3], P, r, ARGV[16])
        changed = 1
      end
    end
  end
end
local left = 0
if openAt then left = math.max(redis.call('PTTL', KEYS[5]), 0) end
local state = 0
if openAt then state = 1 elseif dominate then state = 2 end
return {tostring(state), tostring(opened), tostring(openAt and now - openAt or 0), tostring(left),
  tostring(FW), tostring(SW + FW), string.format('%.3f', rate), tostring(changed),
  tostring(math.max(untilMs - now, 0)), tostring(C)}
`)

// closeScript closes a project's circuit, if it is open, forgets the
// counts and the watch that opened it, counts the close, and publishes it.
//
// KEYS: 1 circuits, 2 the probe lease, 3 the project's counts, 4 watches,
// 5 closes. ARGV: 1 project, 2 channel.
// Returns {1, ms it was open, closes} when it closed it, {0, 0, closes}
// otherwise.
var closeScript = redis.NewScript(nowMs + `
local cv = redis.call('HGET', KEYS[1], ARGV[1])
if not cv then return {0, 0, tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0') or 0} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
local c = redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
redis.call('PUBLISH', ARGV[2], 'close ' .. ARGV[1] .. ' ' .. c)
return {1, now - (tonumber(string.match(cv, '^(%d+)')) or now), c}
`)

// probeScript takes the probe lease of an open circuit for the interval.
//
// KEYS: 1 circuits, 2 the probe lease. ARGV: 1 project, 2 worker,
// 3 interval ms.
// Returns {1, interval} when this call is the probe, {0, ms until the lease
// ends} when another call is, {2, 0} when the circuit is closed.
var probeScript = redis.NewScript(`
if not redis.call('HGET', KEYS[1], ARGV[1]) then return {2, 0} end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return {1, tonumber(ARGV[3])} end
return {0, math.max(redis.call('PTTL', KEYS[2]), 0)}
`)
