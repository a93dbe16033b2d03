package enqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/internal/rkey"
	"github.com/resendq/resendq/tasks"
)

// replicaSetup is a master with one replica and an Enqueuer on the master
// that waits for one replica.
type replicaSetup struct {
	enq             *Enqueuer
	master, replica *redistest.Server
	waitTimeout     time.Duration
}

func setupReplica(t *testing.T) replicaSetup {
	t.Helper()
	master := redistest.Start(t)
	replica := redistest.StartReplica(t, master)
	const timeout = time.Second
	enq := New(master.Client(t), Options{WaitReplicas: 1, WaitTimeout: timeout})
	return replicaSetup{enq: enq, master: master, replica: replica, waitTimeout: timeout}
}

func TestWaitReplicasAcknowledged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := setupReplica(t)
	res, err := s.enq.Enqueue(ctx, tasks.Resend{ProjectID: project, Username: "john@example.com"})
	if err != nil {
		t.Fatalf("Enqueue with a replica up: %v", err)
	}
	// WAIT returned: the replica has the task already, not eventually.
	if n, err := s.replica.Client(t).Exists(ctx, rkey.AsynqTask(tasks.QueueSignup, res.TaskID)).Result(); err != nil || n != 1 {
		t.Errorf("the task on the replica right after the enqueue: %d, %v; want it there", n, err)
	}
	out, err := s.enq.EnqueueMany(ctx, []tasks.Resend{{ProjectID: project, Username: "mary@example.com"}}, nil)
	if err != nil || out[0].Err != nil {
		t.Errorf("EnqueueMany with a replica up: %+v, %v", out, err)
	}
	sum, err := s.enq.EnqueueBatch(ctx, csvSourceOf(t, "username\nann@example.com\n"), BatchOptions{BatchID: "b1"})
	if err != nil || sum.Enqueued != 1 {
		t.Errorf("EnqueueBatch with a replica up: %+v, %v", sum, err)
	}
}

func TestWaitReplicasFallsShortWhenTheReplicaIsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := setupReplica(t)
	s.replica.Stop()

	start := time.Now()
	res, err := s.enq.Enqueue(ctx, tasks.Resend{ProjectID: project, Username: "john@example.com"})
	var re *ReplicasError
	if !errors.As(err, &re) || re.Want != 1 || re.Acked != 0 || re.Timeout != s.waitTimeout {
		t.Fatalf("Enqueue with the replica down: %+v, %v; want a *ReplicasError, 0 of 1 acknowledged", res, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the enqueue took %s with a wait timeout of %s", took, s.waitTimeout)
	}
	if want := "only 0 of the 1 replicas asked for acknowledged it within 1s"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	// The task is on the master all the same, and a repeat names it.
	if n, err := s.master.Client(t).Exists(ctx, rkey.AsynqTask(tasks.QueueSignup, res.TaskID)).Result(); err != nil || n != 1 {
		t.Errorf("the task on the master: %d, %v; want it there", n, err)
	}
	again, err := s.enq.Enqueue(ctx, tasks.Resend{ProjectID: project, Username: "john@example.com"})
	if !errors.As(err, &re) || !again.Duplicate || again.TaskID != res.TaskID {
		t.Errorf("the repeat: %+v, %v; want the first task as a duplicate, and the replicas still short", again, err)
	}

	out, err := s.enq.EnqueueMany(ctx, []tasks.Resend{{ProjectID: project, Username: "mary@example.com"}}, nil)
	if !errors.As(err, &re) || len(out) != 1 || out[0].TaskID == "" {
		t.Errorf("EnqueueMany with the replica down: %+v, %v; want the result and a *ReplicasError", out, err)
	}
	gres, err := s.enq.NewGrouper().Enqueue(ctx, tasks.Resend{ProjectID: project, Username: "ann@example.com"}, "")
	if !errors.As(err, &re) || gres.TaskID == "" {
		t.Errorf("Grouper.Enqueue with the replica down: %+v, %v; want the result and a *ReplicasError", gres, err)
	}
	sum, err := s.enq.EnqueueBatch(ctx, csvSourceOf(t, "username\nbob@example.com\n"), BatchOptions{BatchID: "b1"})
	if !errors.As(err, &re) || sum.Enqueued != 1 {
		t.Errorf("EnqueueBatch with the replica down: %+v, %v; want 1 enqueued and a *ReplicasError", sum, err)
	}
}

func TestWaitReplicasOffByDefault(t *testing.T) {
	t.Parallel()
	b := setup(t, Options{}) // no replica at all
	if _, err := b.enq.Enqueue(context.Background(), tasks.Resend{ProjectID: project, Username: "john@example.com"}); err != nil {
		t.Fatalf("Enqueue without WaitReplicas: %v", err)
	}
	if n, err := b.srv.Client(t).Exists(context.Background(), "resendq:"+replicaAckKey).Result(); err != nil || n != 0 {
		t.Errorf("the wait's key written without WaitReplicas: %d, %v", n, err)
	}
}

func csvSourceOf(t *testing.T, s string) *CSVReader {
	t.Helper()
	src, err := NewCSVReader(strings.NewReader(s), tasks.Resend{ProjectID: project})
	if err != nil {
		t.Fatal(fmt.Errorf("CSV: %w", err))
	}
	return src
}

// wrapped is a client that wraps another, as the worker's do.
type wrapped struct{ redis.UniversalClient }

func (w wrapped) Unwrap() redis.UniversalClient { return w.UniversalClient }

func TestWaitReplicasLooksThroughWrappersButNotAtClusters(t *testing.T) {
	t.Parallel()
	single := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer single.Close()
	if c, ok := singleClient(wrapped{wrapped{single}}); !ok || c != single {
		t.Errorf("singleClient of a wrapped client = %v, %v; want the client inside", c, ok)
	}
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cluster.Close()
	enq := New(wrapped{cluster}, Options{WaitReplicas: 1})
	if err := enq.waitReplicas(context.Background()); !errors.Is(err, ErrWaitOnCluster) {
		t.Errorf("waitReplicas on a cluster client: %v; want ErrWaitOnCluster", err)
	}
}
