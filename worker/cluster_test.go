package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/internal/rkey"
	"github.com/resendq/resendq/loginapi/fake"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

// TestWorkerOnACluster runs a worker process (New) on a 3-master Redis
// Cluster: tasks of both queues, enqueued with asynq's client, are each sent
// once, a 429 pauses the project (every worker's flow control) and its task
// is sent on the retry, and a 5xx is retried; the outcome records, with the
// retried tasks' attempt histories, spread over the masters.
func TestWorkerOnACluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	rdb := c.Client(t)
	api, opts := apiDouble(t)
	w, err := New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	records := outcome.NewStore(rdb, outcome.Options{})
	if !rkey.IsCluster(w.server.dequeue) {
		t.Fatal("the dequeuer does not tell a cluster client")
	}
	api.Script("limited@example.com", fake.Behavior{RateLimited: 1, RetryAfter: "1"})
	api.Script("flaky@example.com", fake.Behavior{ServerErrors: 1})
	users := []string{"limited@example.com", "flaky@example.com"}
	for i := range 40 {
		users = append(users, fmt.Sprintf("user%d@example.com", i))
	}
	client := asynq.NewClientFromRedisClient(rdb)
	for i, u := range users {
		task, err := tasks.NewTask(tasks.Resend{ProjectID: testProject, Username: u})
		if err != nil {
			t.Fatal(err)
		}
		queue := []string{tasks.QueueSignup, tasks.QueueBulk}[i%2]
		if _, err := client.Enqueue(task, tasks.Options(queue, fmt.Sprintf("cluster-%d", i))...); err != nil {
			t.Fatal(err)
		}
	}
	runWorker(t, w)
	deadline := time.Now().Add(30 * time.Second)
	for i, u := range users {
		for {
			rec, ok, err := records.Get(context.Background(), fmt.Sprintf("cluster-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				if rec.Status != outcome.StatusSent {
					t.Errorf("%s: %+v, want sent", u, rec)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no outcome for %s within 30s (API calls: %d)", u, api.Count(u))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ins := asynq.NewInspectorFromRedisClient(rdb)
	for _, q := range []string{tasks.QueueSignup, tasks.QueueBulk} {
		waitFor(t, func() bool {
			info, err := ins.GetQueueInfo(q)
			return err == nil && info.Pending+info.Active+info.Retry+info.Archived == 0
		}, "queue "+q+" to have no task left")
	}
	for i, u := range users {
		want := 1
		if u == "limited@example.com" || u == "flaky@example.com" {
			want = 2
		}
		if n := api.Count(u); n != want {
			t.Errorf("%s: %d calls, want %d", u, n, want)
		}
		if i < 2 {
			if tl, ok, err := records.Timeline(context.Background(), fmt.Sprintf("cluster-%d", i)); err != nil || !ok || len(tl.History) != 1 {
				t.Errorf("%s: timeline %+v, %v, %v; want one attempt before the last", u, tl, ok, err)
			}
		}
	}
	for i := range c.Addrs {
		if n := len(c.Node(t, i).Keys(context.Background(), "resendq:{o*}:outcome:*").Val()); n == 0 {
			t.Errorf("master %d holds no outcome record", i)
		}
	}
}
