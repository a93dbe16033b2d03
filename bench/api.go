package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
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
	n := a.active.Add(1)
	defer a.active.Add(-1)
	for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
	}
	if d := time.Duration(a.latency.Load()); d > 0 {
		time.Sleep(d)
	}
	a.calls.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) close() { _ = a.srv.Close() }
