package worker

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/rkey"
	"github.com/resendq/resendq/metrics"
)

// The metrics package keeps the worker's metrics.
var _ Observer = (*metrics.Observer)(nil)

func TestWorkerHotPathIsStreamed(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	ap, ok := streamed(rdb).(*redis.AutoPipeliner)
	if !ok || !ap.Config().FullDuplex {
		t.Fatalf("streamed(*redis.Client) = %T, want a full-duplex *redis.AutoPipeliner", streamed(rdb))
	}
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cluster.Close()
	cs, ok := streamed(cluster).(clusterStream)
	if !ok || !cs.Config().FullDuplex || !rkey.IsCluster(cs) {
		t.Errorf("streamed(*redis.ClusterClient) = %T, want a full-duplex autopipeliner that tells a cluster", streamed(cluster))
	}
}
