package web

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine they started is still
// running once they are done, but two that end by themselves:
//   - go-redis leaves one behind a dial that failed (a test stopped Redis):
//     it sleeps a second between tries, and ends at its next try once its
//     client is closed;
//   - the Login API client's pool keeps one that closes idle connections,
//     until they are all closed (within twice the idle timeout, 10s, of the
//     last call).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"))
}
