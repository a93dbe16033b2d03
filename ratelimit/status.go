package ratelimit

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/rkey"
)

// State is the flow control of one project, as a worker or the fleet knows
// it. Durations are what remains, or what has passed, when it was read.
type State struct {
	// Project is the Login project ID.
	Project string `json:"project_id"`
	// Paused is how long the project's pause after a 429 still runs; 0:
	// none.
	Paused time.Duration `json:"-"`
	// PausedSeconds is Paused in seconds, for JSON.
	PausedSeconds float64 `json:"paused_seconds,omitempty"`
	// Open: the project's circuit is open (an outage of the API).
	Open bool `json:"circuit_open"`
	// OpenFor is how long it has been open.
	OpenFor time.Duration `json:"-"`
	// OpenSeconds is OpenFor in seconds, for JSON.
	OpenSeconds float64 `json:"open_seconds,omitempty"`
	// Failures and Calls are what the window held when it opened.
	Failures int `json:"opened_on_failures,omitempty"`
	Calls    int `json:"opened_on_calls,omitempty"`
	// Watched: a transient failure came in the last window; every worker
	// reports its calls of the project.
	Watched bool `json:"watched,omitempty"`
	// Rate is the project's adaptive rate in calls per second, learned by
	// the fleet; 0: none. (A worker's fixed rates are its own
	// configuration and show in its metrics, not here.)
	Rate float64 `json:"adaptive_rate,omitempty"`
	// Learning: a first 429 came, and the rate is being learned.
	Learning bool `json:"learning,omitempty"`
}

// Local is what this worker knows of every project it called or heard of
// that has a pause, an open circuit or a rate (its fixed rate, else its
// adaptive one), for its metrics. It costs no round trip.
func (l *Limiter) Local() []State {
	now := l.opts.Clock.Now()
	var out []State
	l.projects.Range(func(_, v any) bool {
		p := v.(*project)
		p.mu.Lock()
		st := State{Project: p.name, Paused: max(p.pauseUntil.Sub(now), 0), Open: !p.openAt.IsZero(), Rate: p.rate, Learning: p.learning}
		if st.Open {
			st.OpenFor = now.Sub(p.openAt)
		}
		st.Watched = p.watchUntil.After(now)
		p.mu.Unlock()
		if f := l.fixed(p.name); f > 0 {
			st.Rate = float64(f)
		}
		if st.Paused > 0 || st.Open || st.Rate > 0 {
			out = append(out, st)
		}
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Project < out[j].Project })
	return out
}

// Status reads the fleet's flow control of every project from Redis: what
// an operator asks when the API misbehaves. prefix is the limiters'
// KeyPrefix ("" for the default).
func Status(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]State, error) {
	k := keysFor(prefix, rkey.IsCluster(rdb))
	res, err := stateScript.Run(ctx, rdb, []string{k.cooldown, k.circuits, k.watch, k.rates, k.closes}, 0).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("flow control: read the fleet's state: %w", err)
	}
	byProject := map[string]*State{}
	get := func(p string) *State {
		if byProject[p] == nil {
			byProject[p] = &State{Project: p}
		}
		return byProject[p]
	}
	num := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
	for i := 0; i+4 < len(res); i += 5 {
		if res[i] == "closes" {
			continue
		}
		st := get(res[i+1])
		switch res[i] {
		case "pause":
			st.Paused = ms(num(res[i+2]))
			st.PausedSeconds = st.Paused.Seconds()
		case "open":
			st.Open, st.OpenFor = true, ms(num(res[i+2]))
			st.OpenSeconds = st.OpenFor.Seconds()
			st.Failures, st.Calls = int(num(res[i+3])), int(num(res[i+4]))
		case "watch":
			st.Watched = true
		case "rate":
			st.Rate = num(res[i+2])
			st.Learning = st.Rate == 0
		}
	}
	out := make([]State, 0, len(byProject))
	for _, st := range byProject {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Project < out[j].Project })
	return out, nil
}

// stateScript lists the flow control of every project, on Redis's clock:
// what a worker reads (sync), and an operator (Status). For a worker, it
// also forgets the watches that ended and the adaptive rates that have not
// changed for the worker's memory period; an operator's read changes
// nothing.
//
// KEYS: 1 pauses, 2 circuits, 3 watches, 4 rates, 5 closes. ARGV: 1 rate
// memory (ms; 0: read only).
// Returns a flat list of kind, project and three values: "pause" and ms
// left; "open", ms open, the failures and calls it opened on; "watch" and
// ms left; "rate" and the rate (0: being learned); "closes" and how many
// times its circuit closed.
var stateScript = redis.NewScript(nowMs + `
local memory = tonumber(ARGV[1])
local out = {}
local function add(kind, p, a, b, c)
  out[#out + 1] = kind; out[#out + 1] = p
  out[#out + 1] = tostring(a); out[#out + 1] = tostring(b or 0); out[#out + 1] = tostring(c or 0)
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local u = tonumber(all[i + 1]) or 0
  if u > now then add('pause', all[i], u - now) end
end
all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local at, f, c = string.match(all[i + 1], '^(%d+) (%d+) (%d+)$')
  if at then add('open', all[i], now - tonumber(at), f, c) end
end
all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  local u = tonumber(string.match(all[i + 1], ' (%d+)$'))
  if u and u > now then add('watch', all[i], u - now) elseif u and memory > 0 then redis.call('HDEL', KEYS[3], all[i]) end
end
all = redis.call('HGETALL', KEYS[4])
for i = 1, #all, 2 do
  local rate, changed = string.match(all[i + 1], '^(%S+) (%d+)')
  rate, changed = tonumber(rate), tonumber(changed)
  if changed and memory > 0 and now - changed > memory then redis.call('HDEL', KEYS[4], all[i])
  elseif rate then add('rate', all[i], rate) end
end
all = redis.call('HGETALL', KEYS[5])
for i = 1, #all, 2 do add('closes', all[i], all[i + 1]) end
return out
`)
