// Command resendq makes sure every new user gets their account confirmation
// email: it enqueues "resend confirmation email" tasks into asynq on Redis,
// works them off against the Xsolla Login API, and answers who got their
// email and why someone did not.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// go-redis prints every failed dial itself; the command reports the error once.
	redis.SetLogger(quietRedisLog{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit status:
// 0 success, 1 failure, 2 bad usage or input.
func run(ctx context.Context, args []string, env func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(&app{env: env, stdin: stdin, stdout: stdout, stderr: stderr})
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "resendq:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "resendq:", err)
	if strings.HasPrefix(err.Error(), "unknown command") {
		return 2 // cobra's error for a mistyped command has no type of its own
	}
	return 1
}

type quietRedisLog struct{}

func (quietRedisLog) Printf(context.Context, string, ...interface{}) {}

// exitError carries the exit status a command ends with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageErr marks err as bad usage or bad input: exit status 2.
func usageErr(err error) error { return &exitError{code: 2, err: err} }
