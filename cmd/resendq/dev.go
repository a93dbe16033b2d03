package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/memredis"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
	"github.com/resendq/resendq/web"
)

// devProjectID is the project the demo resends belong to.
const devProjectID = "6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11"

func newDevCmd(a *app) *cobra.Command {
	var redisAddr, apiAddr string
	var demo int
	var once bool
	var wf workerFlags
	var hf httpFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process: an embedded Redis, a fake Login API and a worker",
		Long: `Starts an embedded Redis-compatible server (its data lives in memory only),
a double of the Login API and a worker pointed at both, and prints the
commands that work against them from another terminal. Nothing to install.`,
		Example: `  resendq dev --demo 12          # enqueue 12 sample resends, print their outcomes
  resendq dev --demo 12 --once   # ... then exit`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := wf.validate(); err != nil {
				return usageErr(err)
			}
			if demo < 0 {
				return usageErr(fmt.Errorf("--demo %d: must not be negative", demo))
			}
			if err := hf.validate(); err != nil {
				return usageErr(err)
			}
			env, err := startDev(cmd.Context(), a, redisAddr, apiAddr, &wf)
			if err != nil {
				return err
			}
			defer env.close()
			httpSrv, err := hf.serve(a, env.proc.surface(), true)
			if err != nil {
				return err
			}
			defer httpSrv.stop()
			env.uiURL = httpSrv.uiURL()
			return env.run(cmd.Context(), demo, once)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&redisAddr, "redis-addr", "127.0.0.1:6379", "address of the embedded Redis (a free port is used if it is taken)")
	fs.StringVar(&apiAddr, "api-addr", "127.0.0.1:8089", "address of the fake Login API (a free port is used if it is taken)")
	fs.IntVar(&demo, "demo", 0, "enqueue this many sample resends covering every outcome and print the outcome table")
	fs.BoolVar(&once, "once", false, "exit after the demo's outcome table instead of serving on")
	wf.register(fs)
	hf.register(fs, devHTTPAddr)
	// Quick retries, so that the demo's transient failures settle in seconds.
	for name, v := range map[string]string{"max-attempts": "4", "backoff-initial": "250ms", "backoff-max": "2s", "api-base": ""} {
		f := fs.Lookup(name)
		f.DefValue = v
		_ = f.Value.Set(v)
	}
	fs.Lookup("api-base").Usage = "Login API to call (default: the fake one started by dev)"
	return cmd
}

// devEnv is what `resendq dev` runs.
type devEnv struct {
	a       *app
	mini    *memredis.Server
	rdb     redis.UniversalClient
	apiLn   net.Listener
	api     *fake.API
	proc    *workerProc
	apiBase string
	uiURL   string // the asynq UI, if served
}

func startDev(ctx context.Context, a *app, redisAddr, apiAddr string, wf *workerFlags) (*devEnv, error) {
	env := &devEnv{a: a}
	var err error
	if env.mini, err = memredis.Start(redisAddr); err != nil {
		if env.mini, err = memredis.Start("127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", apiAddr)
	if err != nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			env.mini.Close()
			return nil, fmt.Errorf("start fake Login API: %w", err)
		}
	}
	env.apiLn, env.api = ln, fake.New()
	env.api.SetRules(fake.DemoRules)
	env.apiBase = wf.apiBase
	if env.apiBase == "" {
		env.apiBase = "http://" + ln.Addr().String() + "/api"
		wf.apiBase = env.apiBase
	}
	env.rdb = redis.NewClient(&redis.Options{Addr: env.mini.Addr(), PoolSize: wf.concurrency + 16})
	if env.proc, err = wf.build(a, env.rdb); err != nil {
		env.close()
		return nil, err
	}
	return env, nil
}

func (e *devEnv) close() {
	e.rdb.Close()
	e.apiLn.Close()
	e.mini.Close()
}

func (e *devEnv) run(ctx context.Context, demo int, once bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go serveUntilDone(ctx, e.apiLn, e.api)
	done := make(chan error, 1)
	go func() { done <- e.proc.Run(ctx) }()
	e.printBanner()
	if demo > 0 {
		if err := e.runDemo(ctx, demo); err != nil {
			cancel()
			<-done
			return err
		}
		if once {
			cancel()
			return <-done
		}
	}
	fmt.Fprintln(e.a.stdout, "Serving; press Ctrl-C to stop. Everything lives in memory and is gone when this process exits.")
	return <-done
}

func (e *devEnv) printBanner() {
	url := e.mini.URL()
	fmt.Fprintf(e.a.stdout, `resendq dev: embedded Redis at %s (in memory only: nothing is kept after exit)
             Login API %s%s

Try, from another terminal:
  resendq enqueue  --redis-url %s --project-id %s --username john@example.com
  resendq enqueue  --redis-url %s --project-id %s --username unknown@example.com
  resendq outcomes list  --redis-url %s
  resendq outcomes stats --redis-url %s
%s
`, url, e.apiBase, e.uiLine(), url, devProjectID, url, devProjectID, url, url, e.curlLine())
}

// curlLine is the banner's example of the HTTP API, or "" when it is off.
func (e *devEnv) curlLine() string {
	if e.uiURL == "" {
		return ""
	}
	base := strings.TrimSuffix(e.uiURL, web.UIPath)
	return fmt.Sprintf("  curl -sS %s/api/v1/resends -H 'Content-Type: application/json' -d '{\"project_id\":\"%s\",\"username\":\"jane@example.com\"}'\n", base, devProjectID)
}

// uiLine is the banner line of the web UI, or "" when it is off.
func (e *devEnv) uiLine() string {
	if e.uiURL == "" {
		return ""
	}
	base := strings.TrimSuffix(e.uiURL, web.UIPath)
	return fmt.Sprintf("\n             Web UI    %s (also %s/support/, %s/metrics, %s/api/v1/outcomes)", e.uiURL, base, base, base)
}

// demoUsers are the usernames of the demo, in turn: every kind the fake
// API answers otherwise, with an ordinary user who gets the email before
// every second one.
func demoUsers() []string {
	var names []string
	for i, k := range fake.DemoKinds {
		if i%2 == 0 {
			names = append(names, "user")
		}
		names = append(names, k.Prefix)
	}
	return append(names, "user")
}

// runDemo enqueues n sample resends covering every outcome (one with an
// invalid payload among them), waits until all are final and prints them.
func (e *devEnv) runDemo(ctx context.Context, n int) error {
	start := time.Now().Add(-time.Second)
	enq := enqueue.New(e.rdb, enqueue.Options{})
	kinds := demoUsers()
	for i := 0; i < n-1; i++ {
		kind := kinds[i%len(kinds)]
		r := tasks.Resend{ProjectID: devProjectID, Username: fmt.Sprintf("%s.%d@example.com", kind, i+1)}
		if _, err := enq.Enqueue(ctx, r); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	// A task written by a broken producer: the worker dead-letters it as invalid.
	bad := asynq.NewTask(tasks.TypeResend, []byte(`{"project_id":"not-a-uuid","username":"broken.producer@example.com"}`))
	if _, err := asynq.NewClientFromRedisClient(e.rdb).EnqueueContext(ctx, bad, asynq.Queue(tasks.QueueSignup)); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(e.a.stdout, "Demo: enqueued %d resends; waiting for every one to reach its outcome...\n\n", n)
	store := outcome.NewStore(e.rdb, outcome.Options{})
	for {
		st, err := store.Stats(ctx)
		if err != nil {
			return err
		}
		if st.Sent+st.DeadLetter >= int64(n) {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	page, err := store.List(ctx, outcome.Filter{Since: start, Limit: min(n, 1000)})
	if err != nil {
		return err
	}
	w := newRecordWriter(e.a, false)
	if err := w.write(page.Records); err != nil {
		return err
	}
	w.flush("")
	st, _ := store.Stats(ctx)
	fmt.Fprintf(e.a.stdout, "\n%d sent, %d dead-lettered (%s)\n\n", st.Sent, st.DeadLetter, joinCounts(st.ByReason))
	return nil
}

func joinCounts(m map[string]int64) string {
	parts := make([]string, 0, len(m))
	for _, r := range outcome.Reasons() {
		if k := string(r); m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}
