package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/resendq/resendq/internal/redisurl"
)

// app holds what every command shares: the streams and the logger.
type app struct {
	env            func(string) (string, bool) // os.LookupEnv
	stdin          io.Reader
	stdout, stderr io.Writer
	log            *logrus.Logger
	logFormat      string
	logLevel       string
}

// envPrefix is the prefix of the environment variable behind every flag:
// --redis-url reads RESENDQ_REDIS_URL.
const envPrefix = "RESENDQ_"

const defaultRedisURL = "redis://127.0.0.1:6379/0"

func newRoot(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:           "resendq",
		Short:         "Reliable resends of Xsolla Login account confirmation emails",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd.Flags(), a.env); err != nil {
				return usageErr(err)
			}
			return a.setupLog()
		},
	}
	root.PersistentFlags().StringVar(&a.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	root.AddCommand(newWorkerCmd(a), newEnqueueCmd(a), newBatchCmd(a), newOutcomesCmd(a), newDLQCmd(a), newStatusCmd(a), newServeCmd(a), newFakeAPICmd(a), newDevCmd(a), newMigrateCmd(a))
	return root
}

// bindEnv fills every flag not given on the command line from its
// RESENDQ_* environment variable.
func bindEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		env := envName(f.Name)
		v, ok := lookup(env)
		if !ok || f.Changed {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", env, err))
		}
	})
	return errors.Join(errs...)
}

func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func (a *app) setupLog() error {
	log := logrus.New()
	log.SetOutput(a.stderr)
	switch a.logFormat {
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano})
	case "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339})
	default:
		return usageErr(fmt.Errorf("--log-format %q: want text or json", a.logFormat))
	}
	level, err := logrus.ParseLevel(a.logLevel)
	if err != nil {
		return usageErr(fmt.Errorf("--log-level %q: want debug, info, warn or error", a.logLevel))
	}
	log.SetLevel(level)
	a.log = log
	return nil
}

// redisFlags are the flags of a command that talks to Redis.
type redisFlags struct{ url string }

func (r *redisFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&r.url, "redis-url", defaultRedisURL, "Redis to use: "+redisurl.Forms)
}

// connect opens a client for --redis-url sized for poolSize concurrent
// users (0: go-redis's default; on a cluster, per node) and checks that
// Redis answers.
func (r *redisFlags) connect(ctx context.Context, poolSize int) (redis.UniversalClient, error) {
	rdb, err := redisurl.Open(r.url, redisurl.Options{PoolSize: poolSize})
	if err != nil {
		return nil, usageErr(fmt.Errorf("--redis-url: %w", err))
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = noAnswer(r.url)
		}
		return nil, fmt.Errorf("cannot reach Redis at %s: %v", redisurl.Redact(r.url), err)
	}
	return rdb, nil
}

// pingTimeout bounds the PING a command starts with.
const pingTimeout = 5 * time.Second

// noAnswer is what a PING that timed out means: go-redis keeps trying
// until then and leaves only "context deadline exceeded".
func noAnswer(rawURL string) error {
	if redisurl.IsSentinel(rawURL) {
		return fmt.Errorf("no answer within %s from the Sentinels, or from the master they name", pingTimeout)
	}
	return fmt.Errorf("no answer within %s", pingTimeout)
}

// redactURL hides the password of a URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
