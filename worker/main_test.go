package worker

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine they started is still
// running once they are done. The Login API client's pool keeps one that
// closes idle connections: it ends by itself once they are closed, within
// twice the idle timeout (10s) of the last call.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"))
}
