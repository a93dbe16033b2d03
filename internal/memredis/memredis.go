// Package memredis is the embedded Redis of `resendq dev`: an in-process
// miniredis (it runs asynq's Lua scripts too) whose keys expire on the real
// clock. miniredis itself expires keys only when told to (FastForward), so
// a Server tells it every ExpiryInterval how much real time has passed:
// dedup windows, locks and pauses then end as they do on a real Redis, at
// most ExpiryInterval late. Its data lives in memory only.
package memredis

import (
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// ExpiryInterval is how often a Server expires the keys whose time is up.
const ExpiryInterval = 50 * time.Millisecond

// Server is a running embedded Redis.
type Server struct {
	*miniredis.Miniredis
	stop chan struct{}
	done chan struct{}
}

// Start serves an embedded Redis on addr (host:port; port 0 picks a free
// one) until Close.
func Start(addr string) (*Server, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("start embedded Redis on %s: %w", addr, err)
	}
	s := &Server{Miniredis: m, stop: make(chan struct{}), done: make(chan struct{})}
	go s.expire()
	return s, nil
}

// expire moves miniredis's TTLs on by the real time that passes.
func (s *Server) expire() {
	defer close(s.done)
	t := time.NewTicker(ExpiryInterval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.FastForward(now.Sub(last))
			last = now
		}
	}
}

// URL is the server's address as a redis:// URL of database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Close stops the server; its data is gone.
func (s *Server) Close() {
	close(s.stop)
	<-s.done
	s.Miniredis.Close()
}
