package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// api is the Login API of the benchmarks: it answers 204 to every well-formed
// resend call after an optional latency, and counts the calls, so that both
// workers are checked to have made exactly one call per task, and never more
// calls at once than their concurrency.
type api struct {
	srv     *http.Server
	base    string // e.g. http://127.0.0.1:41234/api
	latency atomic.Int64
	calls   atomic.Int64
	bad     atomic.Int64
	active  atomic.Int64 // calls being answered
	peak    atomic.Int64 // most calls answered at once since the last reset
	busy    atomic.Int64 // ns spent answering calls since the last reset: Σ of each call's time at the API
	first   atomic.Int64 // Unix ns of the first call since the last reset, 0 before it

	watching atomic.Int64 // len(watch): the body is read for usernames only while some are watched
	watchMu  sync.Mutex
	watch    map[string]chan time.Time // username → when its call arrived
}

// expect returns a channel that receives when the next call for username
// arrives.
func (a *api) expect(username string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	a.watchMu.Lock()
	if a.watch == nil {
		a.watch = map[string]chan time.Time{}
	}
	a.watch[username] = ch
	a.watching.Store(int64(len(a.watch)))
	a.watchMu.Unlock()
	return ch
}

// arrived tells a watcher of the username in body that its call came at.
func (a *api) arrived(body []byte, at time.Time) {
	name, ok := bytes.CutPrefix(body, []byte(`{"username":"`))
	if i := bytes.IndexByte(name, '"'); ok && i >= 0 {
		a.watchMu.Lock()
		ch := a.watch[string(name[:i])]
		delete(a.watch, string(name[:i]))
		a.watching.Store(int64(len(a.watch)))
		a.watchMu.Unlock()
		if ch != nil {
			ch <- at
		}
	}
}

const endpoint = "/api/user/resend_confirmation_link"

func startAPI() (*api, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &api{base: "http://" + ln.Addr().String() + "/api"}
	a.srv = &http.Server{Handler: a, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = a.srv.Serve(ln) }()
	return a, nil
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
	if r.Method != http.MethodPost || r.URL.Path != endpoint ||
		!strings.HasPrefix(r.URL.RawQuery, "projectId=") || !bytes.HasPrefix(body, []byte(`{"username":"`)) {
		a.bad.Add(1)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if a.watching.Load() > 0 {
		a.arrived(body, time.Now())
	}
	start := time.Now()
	if a.first.Load() == 0 {
		a.first.CompareAndSwap(0, start.UnixNano())
	}
	n := a.active.Add(1)
	defer func() {
		a.active.Add(-1)
		a.busy.Add(int64(time.Since(start)))
	}()
	for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
	}
	if d := time.Duration(a.latency.Load()); d > 0 {
		time.Sleep(d)
	}
	a.calls.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) close() { _ = a.srv.Close() }
