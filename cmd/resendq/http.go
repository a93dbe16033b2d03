package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/metrics"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/web"
)

// devHTTPAddr is where `resendq dev` serves the UI unless told otherwise.
const devHTTPAddr = "127.0.0.1:8080"

// httpShutdownTimeout bounds how long open HTTP requests may take to finish
// when the process stops.
const httpShutdownTimeout = 5 * time.Second

// httpFlags configure the HTTP surface of a worker process (package web):
// `resendq worker` and the worker inside `resendq dev`.
type httpFlags struct {
	addr          string
	token         string
	producerToken string
	insecure      bool
	uiWrite       bool
	dedup         time.Duration
	idempotency   time.Duration
	replicas      replicaFlags
}

func (h *httpFlags) register(fs *pflag.FlagSet, defaultAddr string) {
	fs.StringVar(&h.addr, "http-addr", defaultAddr, "serve the asynq UI (/monitoring/), the support page (/support/), /metrics, /healthz, /readyz and the API (/api/v1/: enqueue resends, look them up, outcomes, dead letters) on host:port; empty: no HTTP server")
	fs.StringVar(&h.token, "http-token", "", "token required on every HTTP path but /healthz and /readyz, as \"Authorization: Bearer <token>\" or as the password of HTTP Basic")
	fs.StringVar(&h.producerToken, "producer-token", "", "a second token that may only enqueue resends and look them up (/api/v1/resends); needs --http-token")
	fs.DurationVar(&h.dedup, "dedup-window", enqueue.DefaultDedupWindow, "a resend enqueued over HTTP for a user sent one within this window returns the first task (0 disables)")
	fs.DurationVar(&h.idempotency, "idempotency-window", enqueue.DefaultIdempotencyWindow, "how long an Idempotency-Key of the HTTP API is kept: a repeat within it gets the first answer and enqueues nothing")
	fs.BoolVar(&h.insecure, "http-insecure", false, "allow an --http-addr beyond loopback without --http-token (the UI and API show users' email addresses)")
	h.replicas.register(fs)
	fs.BoolVar(&h.uiWrite, "ui-write", false, "let the UI delete, run and archive tasks and pause queues, and the API replay and purge dead letters (default: read-only)")
}

func (h *httpFlags) validate() error {
	for name, tok := range map[string]string{"--http-token": h.token, "--producer-token": h.producerToken} {
		if tok != "" && strings.IndexFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return fmt.Errorf("%s: must not contain spaces or control characters", name)
		}
	}
	switch {
	case h.producerToken != "" && h.token == "":
		return errors.New("--producer-token needs --http-token: without it every path is open to anyone")
	case h.producerToken != "" && h.producerToken == h.token:
		return errors.New("--producer-token must differ from --http-token")
	case h.dedup < 0:
		return fmt.Errorf("--dedup-window %s: must not be negative (0 disables it)", h.dedup)
	case h.idempotency < time.Minute:
		return fmt.Errorf("--idempotency-window %s: must be at least 1m (clients retry within it)", h.idempotency)
	case h.idempotency > outcome.DefaultRetention:
		return fmt.Errorf("--idempotency-window %s: at most %s, as long as outcome records are kept by default", h.idempotency, outcome.DefaultRetention)
	}
	if err := h.replicas.validate(); err != nil {
		return err
	}
	if h.addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(h.addr)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		return fmt.Errorf("--http-addr %q: want host:port, e.g. 127.0.0.1:8080", h.addr)
	}
	if h.token == "" && !h.insecure && !isLoopback(host) {
		return fmt.Errorf("--http-addr %s listens beyond this machine, and the UI and API show users' email addresses: "+
			"set --http-token (or %s), or pass --http-insecure to serve them without one", h.addr, envName("http-token"))
	}
	return nil
}

// isLoopback reports whether host names only this machine. An empty host
// (":8080") means every interface.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// procMetrics are the Prometheus metrics of a worker process: the registry
// /metrics serves and the observer its handler reports to.
type procMetrics struct {
	registry *prometheus.Registry
	observer *metrics.Observer
}

// newProcMetrics assembles the metrics of a worker on rdb. Nothing is read
// from Redis until a scrape.
func newProcMetrics(a *app, rdb redis.UniversalClient) (*procMetrics, error) {
	reg := metrics.NewRegistry()
	if err := reg.Register(metrics.NewQueueCollector(rdb, a.log)); err != nil {
		return nil, err
	}
	obs, err := metrics.NewObserver(reg)
	if err != nil {
		return nil, err
	}
	return &procMetrics{registry: reg, observer: obs}, nil
}

// httpServer is the running HTTP surface of a worker process.
type httpServer struct {
	srv    *http.Server
	url    string // base URL, e.g. "http://127.0.0.1:8080"; empty when off
	served chan struct{}
	errLog io.Closer
}

// surface is what the HTTP surface serves: the Redis of the queues, the
// outcome records and the metrics registry.
type surface struct {
	rdb      redis.UniversalClient
	outcomes web.Outcomes
	metrics  prometheus.Gatherer
}

// serve starts the HTTP surface of sf on --http-addr, or nothing when it is
// empty. With fallback (dev mode), an address that is taken is replaced by
// a free port on the same host. Stop it with stop.
func (h *httpFlags) serve(a *app, sf surface, fallback bool) (*httpServer, error) {
	s := &httpServer{served: make(chan struct{})}
	if h.addr == "" {
		close(s.served)
		return s, nil
	}
	if err := checkWaitClient(h.replicas.replicas, sf.rdb); err != nil {
		return nil, err
	}
	handler, err := web.New(web.Options{
		Redis: sf.rdb, Outcomes: sf.outcomes, Metrics: sf.metrics,
		Enqueuer: enqueue.New(sf.rdb, h.replicas.options(enqueue.Options{DedupWindow: enqueue.DedupWindowOf(h.dedup), IdempotencyWindow: h.idempotency})),
		Token:    h.token, ProducerToken: h.producerToken, UIWrite: h.uiWrite, Log: a.log,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", h.addr)
	if err != nil && fallback {
		host, _, _ := net.SplitHostPort(h.addr)
		ln, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return nil, fmt.Errorf("--http-addr %s: %w", h.addr, err)
	}
	errLog := a.log.WriterLevel(logrus.WarnLevel)
	s.errLog = errLog
	s.url = "http://" + ln.Addr().String()
	s.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(errLog, "http: ", 0),
	}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.log.WithError(err).Error("http server stopped")
		}
	}()
	a.log.WithFields(logrus.Fields{
		"addr": ln.Addr().String(), "ui": s.url + web.UIPath, "token_required": h.token != "",
		"producer_token": h.producerToken != "", "ui_write": h.uiWrite,
	}).Info("http server listening")
	return s, nil
}

// uiURL is the address of the asynq UI, or "" when there is no server.
func (s *httpServer) uiURL() string {
	if s.url == "" {
		return ""
	}
	return s.url + web.UIPath
}

// stop lets open requests finish for a few seconds, then closes the server.
func (s *httpServer) stop() {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.served
	s.errLog.Close()
}

// surface is the HTTP surface of a worker process.
func (p *workerProc) surface() surface {
	return surface{rdb: p.rdb, outcomes: p.Outcomes, metrics: p.metrics.registry}
}
