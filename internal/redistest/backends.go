package redistest

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// Backend is a kind of Redis a test can run on. Start sets a fresh one up
// for t and returns a maker of its clients, each closed when its test ends.
type Backend struct {
	Name  string
	Start func(t testing.TB) func(testing.TB) redis.UniversalClient
}

// Backends are the kinds of Redis resendq runs on: a real redis-server
// ("redis"), the embedded Redis of `resendq dev` ("embedded") and a
// 3-master Redis Cluster ("cluster"), in that order.
func Backends() []Backend {
	return []Backend{
		{"redis", Single(Start)},
		{"embedded", Single(StartEmbedded)},
		{"cluster", func(t testing.TB) func(testing.TB) redis.UniversalClient {
			c := StartCluster(t, 3)
			return func(t testing.TB) redis.UniversalClient { return c.Client(t) }
		}},
	}
}

// Single is the Backend start of a single Redis that start runs.
func Single(start func(testing.TB) *Server) func(testing.TB) func(testing.TB) redis.UniversalClient {
	return func(t testing.TB) func(testing.TB) redis.UniversalClient {
		srv := start(t)
		return func(t testing.TB) redis.UniversalClient { return srv.Client(t) }
	}
}
