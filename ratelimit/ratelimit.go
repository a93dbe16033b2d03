// Package ratelimit is the fleet's flow control toward the Login API. The
// API limits and fails per project, so every worker on the same Redis
// shares, per project:
//
//	state    set by                                 effect on every worker                              costs while calls succeed
//	pause    a 429 (its Retry-After, or the backoff) no call until it ends                               nothing
//	rate     Options.Rate or ProjectRates (fixed),   at most that many calls a second across the fleet   one round trip per call, once a rate is set
//	         else adaptive: down on a 429, up while
//	         calls succeed and wait for it
//	circuit  transient failures (5xx, 408, timeouts, open: one probe every ProbeInterval, fleet-wide;     nothing
//	         connection errors) dominating the       the other calls are held back; the first
//	         fleet's recent calls                    success closes it
//
// A worker asks Wait before every call and tells Done what came of it.
// Wait holds a call back for at most MaxWait (1s by default); a longer hold
// is handed back to the caller (Permit.Later), which gives its worker slot
// up and comes back then, so that one project's trouble does not hold up
// the others.
//
// # What travels through Redis, and when
//
// Each worker counts its own calls per project in memory (a sliding window
// of successes and failures). Nothing goes to Redis while a project's calls
// succeed and it has no rate. A transient failure is reported at once
// (Done), with the worker's counts: Redis sums the fresh counts of every
// worker that reported and decides whether the failures dominate, among the
// calls of the last second (a busy project's outage shows at once) or of
// the whole window (a quiet project's does too). The
// first failure also puts the project under watch (Pub/Sub), and every
// worker with calls for it then reports its counts every ReportInterval
// until the window has passed without a failure, so that the decision sees
// the whole fleet's successes, not only the failing worker's. The circuit
// opens only once the watch has lasted SettleTime, so that one worker cut
// off from the API cannot open it for the others on its own. Meanwhile a
// worker whose failure report finds the failures dominating holds its own
// calls of the project back until then: an outage costs the API a few calls
// per worker, not a storm.
//
// A 429 pauses the project (CoolDown) and, for an adaptive project, lowers
// its rate (AIMD). What the fleet gets through is the sum of the successes
// of every worker's last second. The first 429 of a project without a rate
// makes every worker report; the rate becomes Decrease times what the
// fleet got through, and then grows three times a second (slow start)
// while calls wait for it. A later 429 takes what the fleet got through (or
// the rate, if lower) as the project's ceiling, and sets the rate to
// Decrease times it; while calls wait, the rate climbs back to 97% of the
// ceiling and stays there. After 30s without a 429 it probes above, by
// Increase a second, and more every 10s it goes on, so that a limit the API
// raised, or a rate learned in a slow moment, is found again; each probe
// costs a 429 and its pause, so when a probe finds the ceiling where it
// was, the next waits twice as long (up to 5 minutes). The learned
// rate is kept in Redis (RateMemory) and read by every worker that starts,
// so a restarted fleet does not learn it again.
//
// Workers hear of pauses, circuits and rates over Pub/Sub at once, and read
// them all when they start and every SyncInterval.
//
// # Clocks
//
// A worker's clock and Redis's clock are never compared. Only durations
// travel between them: a pause goes to Redis as its length, Redis keeps
// every end, age and window on its own clock (TIME) and answers with what
// remains, which the worker adds to its own clock.
//
// # Keys
//
// With the default prefix "resendq:": cooldowns (hash: project → end of its
// pause, ms), flow:circuits (hash: project → when its circuit opened and
// what it saw), flow:watch (hash: project → when its watch began and ends),
// flow:closes (hash: project → how many times its circuit closed: counts
// reported from before the last close are stale),
// flow:rates (hash: project → adaptive rate and when it last changed),
// flow:counts:{project} (hash: worker → its counts and when it reported
// them), flow:probe:{project} (the probe's lease), rate:resendq:rate:PROJECT
// (the GCRA state of redis_rate). The Pub/Sub channel is flow.
//
// On a Redis Cluster (rkey.IsCluster) every key but redis_rate's carries the
// hash tag {flow} instead, so that each script runs in one slot:
// {flow}:cooldowns, {flow}:circuits, {flow}:watch, {flow}:closes,
// {flow}:rates, {flow}:counts:PROJECT, {flow}:probe:PROJECT (after the
// prefix); redis_rate's key, the only one its script touches, stays as it
// is, and so does the channel (Pub/Sub reaches every node of a cluster).
// Every script gets every key it touches in KEYS.
package ratelimit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/rkey"
)

// Defaults of Options.
const (
	DefaultMaxCoolDown       = 5 * time.Minute
	DefaultMaxWait           = time.Second
	DefaultSyncInterval      = 10 * time.Second
	DefaultReportInterval    = 100 * time.Millisecond
	DefaultProbeInterval     = 2 * time.Second
	DefaultOutageWindow      = 30 * time.Second
	DefaultOutageThreshold   = 0.5
	DefaultOutageMinFailures = 5
	DefaultDecrease          = 0.9
	DefaultIncrease          = 0.005
	DefaultRateMemory        = 24 * time.Hour
	// MinRate is the lowest adaptive rate, in calls a second.
	MinRate = 0.1
)

// Options configure a Limiter. Zero values are defaults.
type Options struct {
	// Rate is a fixed rate for every project: the most calls per second to
	// the API for one project across every worker on this Redis. 0: none;
	// the projects without a fixed rate adapt (see Adaptive).
	Rate int
	// ProjectRates are fixed rates of some projects, in calls per second.
	ProjectRates map[string]int
	// NoAdaptive turns the adaptive rate off: projects without a fixed rate
	// have no rate at all, only the pauses after a 429.
	NoAdaptive bool
	// MaxRate caps an adaptive rate, in calls per second. 0: no cap.
	MaxRate int
	// Decrease is what an adaptive rate is multiplied by after a 429.
	// Default 0.9.
	Decrease float64
	// Increase is how much an adaptive rate grows per second, as a share of
	// the rate, while calls wait for it, once 30s have passed without a 429
	// (more when the last probes found the same ceiling); faster the longer
	// since (Increase more every 10s, up to doubling a second). Default
	// 0.005.
	Increase float64
	// RateMemory is how long a learned rate is kept after its last change.
	// Default 24h.
	RateMemory time.Duration

	// MaxCoolDown caps one pause after a 429, whatever the Retry-After, and
	// those heard of from other workers. Default 5m; negative: no pauses (a
	// 429 only delays its own task, and other workers' are ignored).
	MaxCoolDown time.Duration

	// ProbeInterval is how often an open circuit lets one call through,
	// fleet-wide. Default 2s; negative: no circuit at all.
	ProbeInterval time.Duration
	// OutageWindow is how far back the fleet's calls count when the circuit
	// decides (besides the last second, where an outage of a busy project
	// shows at once). Default 30s.
	OutageWindow time.Duration
	// OutageThreshold is the share of transient failures among the window's
	// calls that opens the circuit. Default 0.5.
	OutageThreshold float64
	// OutageMinFailures is how many transient failures the window must hold
	// before the circuit may open. Default 5.
	OutageMinFailures int
	// ReportInterval is how often a worker reports its counts of a project
	// the fleet watches (a recent failure, or an adaptive rate). Default
	// 100ms.
	ReportInterval time.Duration
	// SettleTime is how long a project must have been watched before its
	// circuit may open, so that every worker has reported. Default twice the
	// ReportInterval.
	SettleTime time.Duration

	// MaxWait is the longest Wait waits; a longer wait is handed back to
	// the caller, which should come back later rather than hold its worker
	// slot (and starve the other projects). Default 1s.
	MaxWait time.Duration
	// SyncInterval is how often a started Limiter reads every project's
	// state from Redis besides the messages it hears. Default 10s.
	SyncInterval time.Duration
	// KeyPrefix prefixes the Redis keys and channel. Default "resendq:".
	KeyPrefix string
	// WorkerID names this worker in the counts it reports. Default: host,
	// process ID and a random number.
	WorkerID string
	// OnError is told when Redis fails the limiter; calls then go ahead
	// (the API's own 429s still hold them back). Default: ignored.
	OnError func(error)
	// OnEvent is told when this worker opens or closes a circuit, or changes
	// or learns an adaptive rate: once per change, fleet-wide. Default:
	// ignored.
	OnEvent func(Event)
	// Clock is the worker's clock: the end of a pause as this worker knows
	// it, its counts, and the waits. Default: the real clock.
	Clock clockwork.Clock
}

// EventKind says what an Event is about.
type EventKind int

// The kinds of Event.
const (
	// CircuitOpened: a report of this worker opened a project's circuit.
	CircuitOpened EventKind = iota
	// CircuitClosed: a call of this worker succeeded and closed it.
	CircuitClosed
	// RateChanged: this worker set the project's adaptive rate: learned it
	// after a first 429, lowered it after a 429, or raised it by a quarter
	// or more since it last told of it.
	RateChanged
)

// Event is a change of a project's flow control made by this worker.
type Event struct {
	Kind    EventKind
	Project string
	// Failures and Calls are what the fleet's window held when the circuit
	// opened.
	Failures, Calls int
	// Open is how long the circuit was open (CircuitClosed).
	Open time.Duration
	// Rate is the new adaptive rate, Was the one before (0: none), in calls
	// per second (RateChanged).
	Rate, Was float64
}

// Hold says why a call is held back.
type Hold int

// The reasons of a Permit's hold.
const (
	NoHold Hold = iota
	// HoldPaused: the project's pause after a 429.
	HoldPaused
	// HoldRate: the fleet's rate for the project.
	HoldRate
	// HoldOutage: the project's circuit is open: the API is failing.
	HoldOutage
)

func (h Hold) String() string {
	switch h {
	case HoldPaused:
		return "paused"
	case HoldRate:
		return "rate"
	case HoldOutage:
		return "outage"
	}
	return "none"
}

// Permit is what Wait decides of a call.
type Permit struct {
	// Later > 0: make no call now; come back that much later.
	Later time.Duration
	// Hold says why, when Later > 0.
	Hold Hold
	// Probe: the call is the fleet's probe of an open circuit. Tell Done
	// what came of it.
	Probe bool

	suspect bool // held because failures dominate, before the circuit opens
}

// Result is what became of a call, as flow control sees it.
type Result int

// The results Done takes.
const (
	// Answered: the API answered, and not with a transient failure or a
	// 429 (2xx, 4xx): it is up.
	Answered Result = iota
	// Failed: a transient failure (5xx, 408, a timeout, a connection error).
	Failed
	// RateLimited: a 429. The API is up (it closes an open circuit), but
	// the call did not get through: it does not count toward what the
	// fleet gets through, which an adaptive rate is learned from.
	RateLimited
)

// Verdict is what Done says of a call.
type Verdict struct {
	// Outage: the project's circuit is open (perhaps opened by this very
	// call), or the fleet's failures dominate and it is about to open: a
	// failed call is the fleet's to wait out, not its task's.
	Outage bool
	// Later is how much later the call's task should come back, when
	// Outage: a little before the next probe.
	Later time.Duration
}

// Limiter is the flow control of one worker process. It is safe for
// concurrent use.
type Limiter struct {
	rdb      redis.UniversalClient
	gcra     *redis_rate.Limiter
	opts     Options
	keys     keys
	projects sync.Map // name → *project, for every project this worker called or heard of
}

// keys are the Redis keys and channel of a Limiter.
type keys struct {
	prefix   string
	cooldown string // hash: project → end of its pause
	circuits string // hash: project → "opened_at failures calls"
	watch    string // hash: project → "from until"
	closes   string // hash: project → how many times its circuit closed
	rates    string // hash: project → "rate changed_at decreased_at learn_until"
	channel  string
	gcra     string // + project: redis_rate's key
	cluster  bool
}

// counts is the key of a project's counts hash, and probe the key of its
// probe lease.
func (k keys) counts(project string) string { return k.project("counts", project) }
func (k keys) probe(project string) string  { return k.project("probe", project) }

func (k keys) project(kind, project string) string {
	if k.cluster {
		return k.prefix + clusterTag + ":" + kind + ":" + project
	}
	return k.prefix + "flow:" + kind + ":{" + project + "}"
}

// clusterTag is the hash tag of every key of the limiters on a Redis
// Cluster, so that each script, which touches the shared hashes and a
// project's keys at once, runs in one slot. Their data is small (a few
// fields per project), so one slot holds it all.
var clusterTag = rkey.Tag("flow")

// New returns a Limiter on rdb. Call Start to hear of the rest of the
// fleet.
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
	if opts.ReportInterval <= 0 {
		opts.ReportInterval = DefaultReportInterval
	}
	if opts.SettleTime <= 0 {
		opts.SettleTime = 2 * opts.ReportInterval
	}
	if opts.ProbeInterval == 0 {
		opts.ProbeInterval = DefaultProbeInterval
	}
	if opts.OutageWindow <= 0 {
		opts.OutageWindow = DefaultOutageWindow
	}
	if opts.OutageThreshold <= 0 {
		opts.OutageThreshold = DefaultOutageThreshold
	}
	if opts.OutageMinFailures <= 0 {
		opts.OutageMinFailures = DefaultOutageMinFailures
	}
	if opts.Decrease <= 0 || opts.Decrease >= 1 {
		opts.Decrease = DefaultDecrease
	}
	if opts.Increase <= 0 {
		opts.Increase = DefaultIncrease
	}
	if opts.RateMemory <= 0 {
		opts.RateMemory = DefaultRateMemory
	}
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "resendq:"
	}
	if opts.WorkerID == "" {
		host, _ := os.Hostname()
		opts.WorkerID = fmt.Sprintf("%s:%d:%d", host, os.Getpid(), rand.Uint32())
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	return &Limiter{rdb: rdb, gcra: redis_rate.NewLimiter(rdb), opts: opts, keys: keysFor(opts.KeyPrefix, rkey.IsCluster(rdb))}
}

// keysFor are the keys of a limiter with the given KeyPrefix ("" for the
// default), on a Redis Cluster or a single Redis. On a single Redis they are
// the names they always had; on a cluster they all carry clusterTag.
func keysFor(p string, cluster bool) keys {
	if p == "" {
		p = "resendq:"
	}
	flow := p + "flow:"
	cooldown := p + "cooldowns"
	if cluster {
		flow = p + clusterTag + ":"
		cooldown = flow + "cooldowns"
	}
	return keys{
		prefix: p, cooldown: cooldown, circuits: flow + "circuits", watch: flow + "watch",
		closes: flow + "closes", rates: flow + "rates", channel: p + "flow", gcra: p + "rate:", cluster: cluster,
	}
}

// project is what this worker knows of one project.
type project struct {
	name  string
	flags atomic.Uint32 // what Wait must look at: some of flagPaused, flagOpen, flagRate

	mu          sync.Mutex
	window      window    // this worker's calls
	waited      bool      // a call waited for the rate since the last report
	pauseUntil  time.Time // on this worker's clock
	openAt      time.Time // when the circuit opened, as far as known here; zero: closed
	suspect     time.Time // until when this worker holds calls back: failures dominate, the circuit may open
	probeWaiter bool      // a call of this worker waits for the next probe
	nextProbe   time.Time
	watchUntil  time.Time
	rate        float64 // the adaptive rate; 0: none (yet)
	told        float64 // the rate last told of in an Event
	learning    bool    // a first 429 is being learned from
	closes      int64   // how many times its circuit closed, as far as known here: the epoch of window
	lastCall    time.Time
}

const (
	flagPaused = 1 << iota
	flagOpen
	flagRate
)

// lookup returns what this worker knows of a project, nil if nothing. It
// takes no lock.
func (l *Limiter) lookup(name string) *project {
	p, _ := l.projects.Load(name)
	pp, _ := p.(*project)
	return pp
}

// project returns the state of a project, creating it.
func (l *Limiter) project(name string) *project {
	if p := l.lookup(name); p != nil {
		return p
	}
	p, _ := l.projects.LoadOrStore(name, &project{name: name, window: newWindow(l.opts.OutageWindow)})
	return p.(*project)
}

// update changes p under its lock.
func (l *Limiter) update(p *project, change func(now time.Time)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := l.opts.Clock.Now()
	change(now)
	p.setFlags(now)
}

// setFlags recomputes what Wait must look at; p.mu is held.
func (p *project) setFlags(now time.Time) {
	var f uint32
	if p.pauseUntil.After(now) {
		f |= flagPaused
	}
	if !p.openAt.IsZero() || p.suspect.After(now) {
		f |= flagOpen
	}
	if p.rate > 0 {
		f |= flagRate
	}
	p.flags.Store(f)
}

// fixed returns the fixed rate of a project, 0 if none.
func (l *Limiter) fixed(name string) int {
	if r, ok := l.opts.ProjectRates[name]; ok && r > 0 {
		return r
	}
	return l.opts.Rate
}

// adaptive reports whether a project's rate adapts.
func (l *Limiter) adaptive(name string) bool { return !l.opts.NoAdaptive && l.fixed(name) == 0 }

// Wait decides whether a call for project may go now. It waits MaxWait at
// most, for the project's pause or rate: when the call may go only later,
// it returns how much later (Permit.Later > 0) without waiting, and the
// caller comes back then. While the project's circuit is open, every call
// is held back until the next probe, but the one call that becomes the
// probe (Permit.Probe). It returns ctx's error if ctx ends first.
func (l *Limiter) Wait(ctx context.Context, name string) (Permit, error) {
	fixed := l.fixed(name)
	for {
		p := l.lookup(name)
		if fixed == 0 && (p == nil || p.flags.Load() == 0) {
			return Permit{}, nil
		}
		now := l.opts.Clock.Now()
		rate := float64(fixed)
		if p != nil {
			if hold := l.check(p, now); hold.Later > 0 {
				if hold.Hold == HoldPaused && hold.Later <= l.opts.MaxWait {
					if err := l.sleep(ctx, hold.Later); err != nil {
						return Permit{}, err
					}
					continue
				}
				if hold.Hold == HoldOutage && !hold.suspect {
					return l.probe(ctx, p, now) // one call may go, as the probe
				}
				return hold, nil
			}
			if rate == 0 {
				p.mu.Lock()
				rate = p.rate
				p.mu.Unlock()
			}
		}
		if rate <= 0 {
			return Permit{}, nil
		}
		res, err := l.gcra.Allow(ctx, l.keys.gcra+name, limitOf(rate))
		if err != nil {
			if ctx.Err() != nil {
				return Permit{}, ctx.Err()
			}
			l.fail(fmt.Errorf("rate limit of project %s: %w", name, err))
			return Permit{}, nil
		}
		if res.Allowed > 0 {
			return Permit{}, nil
		}
		if p != nil {
			p.mu.Lock()
			p.waited = true
			p.mu.Unlock()
		}
		if res.RetryAfter > l.opts.MaxWait {
			return Permit{Later: res.RetryAfter, Hold: HoldRate}, nil
		}
		if err := l.sleep(ctx, res.RetryAfter); err != nil {
			return Permit{}, err
		}
	}
}

// Check says, without a round trip, whether a call for project must be
// held back after all: a pause or an open circuit that began while it
// waited for its slot. It is for a call that Wait let go; a probe's call is
// not held for its own circuit.
func (l *Limiter) Check(name string, probe bool) Permit {
	p := l.lookup(name)
	if p == nil || p.flags.Load()&(flagPaused|flagOpen) == 0 {
		return Permit{}
	}
	hold := l.check(p, l.opts.Clock.Now())
	if probe && hold.Hold == HoldOutage && !hold.suspect {
		return Permit{}
	}
	return hold
}

// check is what this worker knows holds a call of p back: its pause, else
// its open circuit (until the next probe).
func (l *Limiter) check(p *project, now time.Time) Permit {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setFlags(now) // a pause may have ended
	if d := p.pauseUntil.Sub(now); d > 0 {
		return Permit{Later: d, Hold: HoldPaused}
	}
	if !p.openAt.IsZero() {
		return l.holdFor(max(p.nextProbe.Sub(now), 0) + l.lead())
	}
	if d := p.suspect.Sub(now); d > 0 {
		hold := l.holdFor(d + l.lead())
		hold.suspect = true
		return hold
	}
	return Permit{}
}

// Paused returns how long the pause of project still runs, as far as this
// worker knows; 0 when there is none. It costs no Redis round trip.
func (l *Limiter) Paused(name string) time.Duration {
	p := l.lookup(name)
	if p == nil || p.flags.Load()&flagPaused == 0 {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(p.pauseUntil.Sub(l.opts.Clock.Now()), 0)
}

// Until returns when the pause of project ends, as far as this worker
// knows; a zero time when there is none.
func (l *Limiter) Until(name string) time.Time {
	p := l.lookup(name)
	if p == nil {
		return time.Time{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pauseUntil
}

// Done tells the limiter what came of a call for project (probe: the call
// was the probe Wait allowed). An answered call costs no round trip, unless
// it closes an open circuit; a failed one is reported to the fleet at once,
// and the Verdict says whether the project is in an outage.
func (l *Limiter) Done(ctx context.Context, name string, r Result, probe bool) (Verdict, error) {
	p := l.project(name)
	now := l.opts.Clock.Now()
	p.mu.Lock()
	if r != RateLimited {
		p.window.add(now, r == Failed)
		p.lastCall = now
	}
	open := !p.openAt.IsZero()
	p.mu.Unlock()
	if r != Failed {
		if open || probe {
			return Verdict{}, l.close(ctx, p)
		}
		return Verdict{}, nil
	}
	if l.opts.ProbeInterval < 0 {
		return Verdict{}, nil
	}
	v, err := l.report(ctx, p)
	if err != nil && open {
		return Verdict{Outage: true, Later: l.holdFor(l.opts.ProbeInterval).Later}, err
	}
	return v, err
}

// Start subscribes to what other workers tell and reads every project's
// state, then goes on hearing of it, reporting what the fleet watches and
// syncing every SyncInterval in the background until ctx ends. Call it
// before the worker takes tasks, so that a worker started during a pause or
// an outage keeps it.
func (l *Limiter) Start(ctx context.Context) error {
	sub := l.rdb.Subscribe(ctx, l.keys.channel)
	if _, err := sub.Receive(ctx); err != nil { // the subscription is confirmed
		_ = sub.Close()
		return fmt.Errorf("rate limiting: subscribe to %s: %w", l.keys.channel, err)
	}
	if err := l.sync(ctx); err != nil {
		_ = sub.Close()
		return err
	}
	go l.listen(ctx, sub)
	return nil
}

// listen hears what other workers tell on sub, reports the projects the
// fleet watches every ReportInterval and reads everything every
// SyncInterval, until ctx ends.
func (l *Limiter) listen(ctx context.Context, sub *redis.PubSub) {
	defer sub.Close()
	msgs := sub.Channel()
	syncs := l.opts.Clock.NewTicker(l.opts.SyncInterval)
	defer syncs.Stop()
	reports := l.opts.Clock.NewTicker(l.opts.ReportInterval)
	defer reports.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			l.hear(ctx, m.Payload)
		case <-reports.Chan():
			l.reportWatched(ctx)
		case <-syncs.Chan():
			if err := l.sync(ctx); err != nil && ctx.Err() == nil {
				l.fail(err)
			}
		}
	}
}

// hear takes in one message: "pause P ms", "open P", "close P closes",
// "watch P ms", "rate P r" or "learn P".
func (l *Limiter) hear(ctx context.Context, msg string) {
	f := strings.Fields(msg)
	if len(f) < 2 {
		return
	}
	kind, name := f[0], f[1]
	arg := func() (float64, bool) {
		if len(f) < 3 {
			return 0, false
		}
		v, err := strconv.ParseFloat(f[2], 64)
		return v, err == nil
	}
	switch kind {
	case "pause":
		if ms, ok := arg(); ok {
			l.extend(name, l.opts.Clock.Now().Add(time.Duration(ms)*time.Millisecond))
		}
	case "open":
		if l.opts.ProbeInterval > 0 {
			p := l.project(name)
			l.update(p, func(now time.Time) {
				if p.openAt.IsZero() {
					p.openAt, p.nextProbe = now, now.Add(l.opts.ProbeInterval)
				}
			})
		}
	case "close":
		if e, ok := arg(); ok {
			l.adopt(l.project(name), int64(e))
		}
	case "watch":
		if ms, ok := arg(); ok {
			p := l.project(name)
			l.update(p, func(now time.Time) { p.watchUntil = now.Add(time.Duration(ms) * time.Millisecond) })
		}
	case "rate":
		if r, ok := arg(); ok && l.adaptive(name) {
			p := l.project(name)
			l.update(p, func(time.Time) { p.rate, p.learning = l.capped(r), false })
		}
	case "learn":
		if l.adaptive(name) {
			l.learn(ctx, l.project(name))
		}
	}
}

// sleep waits d on the clock, or until ctx ends.
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

func (l *Limiter) event(e Event) {
	if l.opts.OnEvent != nil {
		l.opts.OnEvent(e)
	}
}

// nowMs is the Lua of Redis's clock in ms, for the scripts.
const nowMs = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`
