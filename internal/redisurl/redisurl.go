// Package redisurl turns the --redis-url of resendq's commands into a Redis
// client. It reads the forms asynq's ParseRedisURI reads, the same way, and
// two of its own for Redis Cluster:
//
//	redis://[[user]:password@]host[:port][/db]                  one node
//	rediss://...                                               one node over TLS
//	redis-socket://[:password@]/path[?db=N]                    one node on a Unix socket
//	redis-sentinel://[:password@]host:port[,host:port...]?master=NAME
//	                                                           the master a Sentinel names (the password is the sentinels')
//	redis-cluster://[[user]:password@]host:port[,host:port...] a Redis Cluster, from any of its nodes
//	rediss-cluster://...                                       a Redis Cluster over TLS
//
// A missing port is 6379. Errors name what is wrong with the URL and show it
// with its password hidden, never the password itself.
package redisurl

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// DefaultPort is the port of an address without one.
const DefaultPort = "6379"

// Forms lists the URL forms Open takes, for help texts and errors.
const Forms = "redis://[:password@]host:port[/db], rediss:// (TLS), redis-socket://path, " +
	"redis-sentinel://host:port[,host:port]?master=NAME, redis-cluster://host:port[,host:port...] or rediss-cluster:// (TLS)"

// Options size the client Open returns. Zero values are defaults.
type Options struct {
	// PoolSize is the most connections the client keeps to each Redis node
	// (for a cluster: to each of its nodes). Default 10 per CPU, go-redis's
	// default for one node, for a cluster too.
	PoolSize int
}

// Open returns a client for rawURL, without connecting yet: a
// *redis.ClusterClient for the cluster forms, a *redis.Client for the
// others (a failover client for redis-sentinel://).
func Open(rawURL string, opts Options) (redis.UniversalClient, error) {
	o, err := parse(rawURL, opts)
	if err != nil {
		return nil, err
	}
	switch o := o.(type) {
	case *redis.ClusterOptions:
		return redis.NewClusterClient(o), nil
	case *redis.FailoverOptions:
		return redis.NewFailoverClient(o), nil
	default:
		return redis.NewClient(o.(*redis.Options)), nil
	}
}

// parse returns the go-redis options of rawURL: *redis.Options,
// *redis.FailoverOptions or *redis.ClusterOptions.
func parse(rawURL string, opts Options) (any, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		// url.Parse's error repeats the URL, password and all.
		return nil, fail(rawURL, "cannot be read as a URL (is every port a number, every special character of the password %-escaped?); want "+Forms)
	}
	if opts.PoolSize <= 0 {
		opts.PoolSize = 10 * runtime.GOMAXPROCS(0)
	}
	switch u.Scheme {
	case "redis", "rediss":
		return nodeOptions(u, opts)
	case "redis-socket":
		return socketOptions(u, opts)
	case "redis-sentinel":
		return sentinelOptions(u, opts)
	case "redis-cluster", "rediss-cluster":
		return clusterOptions(u, opts)
	case "":
		return nil, fail(rawURL, "no scheme; want "+Forms)
	default:
		return nil, fail(rawURL, fmt.Sprintf("unknown scheme %q; want %s", u.Scheme, Forms))
	}
}

func nodeOptions(u *url.URL, opts Options) (*redis.Options, error) {
	addrs, err := hosts(u, false)
	if err != nil {
		return nil, err
	}
	db, err := pathDB(u)
	if err != nil {
		return nil, err
	}
	user, password := credentials(u)
	o := &redis.Options{Addr: addrs[0], Username: user, Password: password, DB: db, PoolSize: opts.PoolSize}
	if u.Scheme == "rediss" {
		o.TLSConfig = &tls.Config{ServerName: hostOnly(addrs[0]), MinVersion: tls.VersionTLS12}
	}
	return o, nil
}

func socketOptions(u *url.URL, opts Options) (*redis.Options, error) {
	path := u.Path
	if path == "" {
		path = u.Opaque
	}
	if path == "" {
		return nil, fail(u.String(), "no socket path; want redis-socket://[:password@]/path/to/redis.sock[?db=N]")
	}
	db := 0
	if v := u.Query().Get("db"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fail(u.String(), fmt.Sprintf("db %q is not a database number", v))
		}
		db = n
	}
	user, password := credentials(u)
	return &redis.Options{
		Network: "unix", Addr: path, Username: user, Password: password, DB: db, PoolSize: opts.PoolSize,
	}, nil
}

// sentinelOptions reads the form as asynq does: the password is the
// sentinels', the master has none.
func sentinelOptions(u *url.URL, opts Options) (*redis.FailoverOptions, error) {
	addrs, err := hosts(u, true)
	if err != nil {
		return nil, err
	}
	master := u.Query().Get("master")
	if master == "" {
		return nil, fail(u.String(), "no master name; want redis-sentinel://host:port[,host:port]?master=NAME")
	}
	_, password := credentials(u)
	return &redis.FailoverOptions{
		MasterName: master, SentinelAddrs: addrs, SentinelPassword: password, PoolSize: opts.PoolSize,
	}, nil
}

func clusterOptions(u *url.URL, opts Options) (*redis.ClusterOptions, error) {
	addrs, err := hosts(u, true)
	if err != nil {
		return nil, err
	}
	if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
		return nil, fail(u.String(), fmt.Sprintf("database %q: a Redis Cluster has database 0 only", p))
	}
	if u.RawQuery != "" {
		return nil, fail(u.String(), "a cluster URL takes no query parameters")
	}
	user, password := credentials(u)
	o := &redis.ClusterOptions{Addrs: addrs, Username: user, Password: password, PoolSize: opts.PoolSize}
	if u.Scheme == "rediss-cluster" {
		// go-redis sets each node's ServerName from its own address.
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return o, nil
}

// IsSentinel reports whether rawURL names a master through Sentinels
// (redis-sentinel://).
func IsSentinel(rawURL string) bool {
	u, err := parseURL(rawURL)
	return err == nil && u.Scheme == "redis-sentinel"
}

// parseURL is url.Parse, but for a list of hosts where some have no port
// (a,b:7000,c), which url.Parse takes for a bad port.
func parseURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err == nil {
		return u, nil
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, err
	}
	end := len(rest)
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		end = i
	}
	at := strings.LastIndexByte(rest[:end], '@')
	list := rest[at+1 : end]
	if !strings.Contains(list, ",") {
		return nil, err
	}
	u, err2 := url.Parse(scheme + "://" + rest[:at+1] + "host" + rest[end:])
	if err2 != nil {
		return nil, err
	}
	u.Host = list
	return u, nil
}

// hosts returns the host:port addresses of u, a comma-separated list when
// several are allowed, with DefaultPort where a port is missing.
func hosts(u *url.URL, several bool) ([]string, error) {
	if u.Host == "" {
		return nil, fail(u.String(), "no host; want "+u.Scheme+"://host:port")
	}
	parts := strings.Split(u.Host, ",")
	if len(parts) > 1 && !several {
		return nil, fail(u.String(), fmt.Sprintf("%d hosts; %s:// reaches one (a cluster: redis-cluster://)", len(parts), u.Scheme))
	}
	addrs := make([]string, len(parts))
	for i, h := range parts {
		if h == "" {
			return nil, fail(u.String(), "an empty host in the list")
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			host, port = strings.Trim(h, "[]"), DefaultPort
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fail(u.String(), fmt.Sprintf("host %q: port %q is not a port number", h, port))
		}
		if host == "" {
			return nil, fail(u.String(), fmt.Sprintf("host %q has no name", h))
		}
		addrs[i] = net.JoinHostPort(host, port)
	}
	return addrs, nil
}

// pathDB is the database number of a redis:// URL's path (0 when none).
func pathDB(u *url.URL) (int, error) {
	p := strings.Trim(u.Path, "/")
	if p == "" {
		return 0, nil
	}
	first, _, _ := strings.Cut(p, "/")
	n, err := strconv.Atoi(first)
	if err != nil || n < 0 {
		return 0, fail(u.String(), fmt.Sprintf("path %q: want a database number, e.g. /0", u.Path))
	}
	return n, nil
}

// credentials are the user name and password of u: the user name only
// when a password comes with it (redis://:password@ authenticates as the
// default user).
func credentials(u *url.URL) (user, password string) {
	if u.User == nil {
		return "", ""
	}
	password, ok := u.User.Password()
	if !ok {
		return "", ""
	}
	return u.User.Username(), password
}

func hostOnly(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

// Error is what Open returns for a URL it cannot use: Redacted is the URL
// with its password hidden.
type Error struct {
	Redacted string
	Problem  string
}

func (e *Error) Error() string { return "Redis URL " + e.Redacted + ": " + e.Problem }

func fail(rawURL, problem string) error { return &Error{Redacted: Redact(rawURL), Problem: problem} }

// Redact returns rawURL with its password hidden, or a placeholder when it
// is not a URL at all (it might hold a password anywhere).
func Redact(rawURL string) string {
	u, err := parseURL(rawURL)
	if err != nil {
		return "(not a URL)"
	}
	return u.Redacted()
}
