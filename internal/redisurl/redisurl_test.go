package redisurl

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/internal/rkey"
)

func TestParseForms(t *testing.T) {
	t.Parallel()
	def := 10 * runtime.GOMAXPROCS(0)
	for _, c := range []struct {
		url  string
		pool int
		want string // the options that matter, as %+v of a small struct
	}{
		{"redis://127.0.0.1:6380/2", 0, fmt.Sprintf("node tcp 127.0.0.1:6380 db 2 user= pw= pool %d tls=", def)},
		{"redis://:s3cret@cache.internal", 64, "node tcp cache.internal:6379 db 0 user= pw=s3cret pool 64 tls="},
		{"redis://alice:s3cret@cache.internal:7000/0", 0, fmt.Sprintf("node tcp cache.internal:7000 db 0 user=alice pw=s3cret pool %d tls=", def)},
		{"redis://alice@cache.internal:7000", 0, fmt.Sprintf("node tcp cache.internal:7000 db 0 user= pw= pool %d tls=", def)},
		{"rediss://:pw@cache.example.com:6380/1", 8, "node tcp cache.example.com:6380 db 1 user= pw=pw pool 8 tls=cache.example.com"},
		{"redis-socket:///run/redis/redis.sock?db=3", 0, fmt.Sprintf("node unix /run/redis/redis.sock db 3 user= pw= pool %d tls=", def)},
		{"redis-socket://:pw@/tmp/r.sock", 5, "node unix /tmp/r.sock db 0 user= pw=pw pool 5 tls="},
		{"redis-sentinel://:spw@10.0.0.1:26379,10.0.0.2:26379?master=main", 7, "sentinel [10.0.0.1:26379 10.0.0.2:26379] master main sentinel-pw=spw pool 7"},
		{"redis-cluster://10.0.0.1:7000,10.0.0.2:7001,10.0.0.3", 0, fmt.Sprintf("cluster [10.0.0.1:7000 10.0.0.2:7001 10.0.0.3:6379] user= pw= pool %d tls=false", def)},
		{"redis-cluster://:pw@10.0.0.1:7000/", 32, "cluster [10.0.0.1:7000] user= pw=pw pool 32 tls=false"},
		{"rediss-cluster://bob:pw@a.example.com:7000,b.example.com:7000/0", 0, fmt.Sprintf("cluster [a.example.com:7000 b.example.com:7000] user=bob pw=pw pool %d tls=true", def)},
	} {
		o, err := parse(c.url, Options{PoolSize: c.pool})
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		if got := describe(o); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.url, got, c.want)
		}
	}
}

func describe(o any) string {
	switch o := o.(type) {
	case *redis.Options:
		sn := ""
		if o.TLSConfig != nil {
			sn = o.TLSConfig.ServerName
		}
		return fmt.Sprintf("node %s %s db %d user=%s pw=%s pool %d tls=%s", cmpOr(o.Network, "tcp"), o.Addr, o.DB, o.Username, o.Password, o.PoolSize, sn)
	case *redis.FailoverOptions:
		return fmt.Sprintf("sentinel %v master %s sentinel-pw=%s pool %d", o.SentinelAddrs, o.MasterName, o.SentinelPassword, o.PoolSize)
	case *redis.ClusterOptions:
		return fmt.Sprintf("cluster %v user=%s pw=%s pool %d tls=%v", o.Addrs, o.Username, o.Password, o.PoolSize, o.TLSConfig != nil)
	}
	return fmt.Sprintf("%T", o)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestOpenClientTypes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		url     string
		cluster bool
	}{
		{"redis://127.0.0.1:1", false},
		{"redis-sentinel://127.0.0.1:1?master=m", false},
		{"redis-cluster://127.0.0.1:1", true},
		{"rediss-cluster://127.0.0.1:1", true},
	} {
		rdb, err := Open(c.url, Options{})
		if err != nil {
			t.Fatalf("%s: %v", c.url, err)
		}
		if got := rkey.IsCluster(rdb); got != c.cluster {
			t.Errorf("%s: IsCluster = %v, want %v", c.url, got, c.cluster)
		}
		_ = rdb.Close()
	}
}

// TestBadURLs: every refusal says what is wrong, shows the URL, and never
// the password.
func TestBadURLs(t *testing.T) {
	t.Parallel()
	const pw = "hunter2secret"
	for _, c := range []struct {
		url, want string
	}{
		{"http://:" + pw + "@example.com", `unknown scheme "http"`},
		{"127.0.0.1:6379", "cannot be read as a URL"},
		{"redis-cluster://:" + pw + "@a:7000,b:x", `host "b:x": port "x" is not a port number`},
		{"//:" + pw + "@example.com:6379", "no scheme"},
		{"redis://:" + pw + "@", "no host"},
		{"redis://:" + pw + "@a:6379,b:6379", "2 hosts; redis:// reaches one (a cluster: redis-cluster://)"},
		{"redis://:" + pw + "@a:6379/x", `path "/x": want a database number`},
		{"redis://:" + pw + "@a:99999", `port "99999" is not a port number`},
		{"redis://:" + pw + "@a:port", "cannot be read as a URL"},
		{"redis://:" + pw + "%zz@a:6379", "cannot be read as a URL"},
		{"redis-socket://:" + pw + "@", "no socket path"},
		{"redis-socket://:" + pw + "@/tmp/r.sock?db=x", `db "x" is not a database number`},
		{"redis-sentinel://:" + pw + "@a:26379", "no master name"},
		{"redis-cluster://:" + pw + "@", "no host"},
		{"redis-cluster://:" + pw + "@a:7000,,b:7000", "an empty host in the list"},
		{"redis-cluster://:" + pw + "@a:7000,b:0", `host "b:0": port "0" is not a port number`},
		{"redis-cluster://:" + pw + "@a:7000/1", `database "1": a Redis Cluster has database 0 only`},
		{"redis-cluster://:" + pw + "@a:7000?read_only=1", "a cluster URL takes no query parameters"},
		{"rediss-cluster://:" + pw + "@:7000", `host ":7000" has no name`},
	} {
		_, err := Open(c.url, Options{})
		if err == nil {
			t.Errorf("%s: no error", Redact(c.url))
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, c.want) {
			t.Errorf("%s: error %q, want it to say %q", Redact(c.url), msg, c.want)
		}
		if strings.Contains(msg, pw) {
			t.Errorf("error shows the password: %q", msg)
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: error %T, want *redisurl.Error", Redact(c.url), err)
		}
	}
	_, err := Open("redis-cluster://:"+pw+"@a:7000/1", Options{})
	if want := "Redis URL redis-cluster://:xxxxx@a:7000/1: "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want it to start %q", err, want)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"redis://:pw@h:1/0":               "redis://:xxxxx@h:1/0",
		"redis-cluster://u:pw@a:1,b:2":    "redis-cluster://u:xxxxx@a:1,b:2",
		"redis://h:1":                     "redis://h:1",
		"redis://:p%zzw@h:1":              "(not a URL)",
		"redis-sentinel://:pw@s:1?master": "redis-sentinel://:xxxxx@s:1?master",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestOpenCluster reaches a real 3-master cluster from its URL and writes
// keys that land on every master.
func TestOpenCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	rdb, err := Open(c.URL, Options{PoolSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("Open(%s) = %T, want *redis.ClusterClient", c.URL, rdb)
	}
	if cc.Options().PoolSize != 4 {
		t.Errorf("pool size %d, want 4", cc.Options().PoolSize)
	}
	ctx := context.Background()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if err := rdb.Set(ctx, fmt.Sprintf("k%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range c.Addrs {
		n, err := c.Node(t, i).DBSize(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Errorf("master %d holds no key of 30", i)
		}
	}
}

func TestIsSentinel(t *testing.T) {
	for raw, want := range map[string]bool{
		"redis-sentinel://a:26379,b?master=m": true,
		"REDIS-SENTINEL://a?master=m":         true,
		"redis://a:6379/0":                    false,
		"redis-cluster://a,b":                 false,
		"::nonsense":                          false,
	} {
		if got := IsSentinel(raw); got != want {
			t.Errorf("IsSentinel(%q) = %v, want %v", raw, got, want)
		}
	}
}
