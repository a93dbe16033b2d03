package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/resendq/resendq/enqueue"
	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/outcome"
	"github.com/resendq/resendq/tasks"
)

func TestMigrateCopiesRecordsAndAsksFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	from, to := redistest.Start(t), redistest.Start(t)
	if _, err := outcome.NewStore(from.Client(t), outcome.Options{}).Finish(ctx, outcome.Record{TaskID: "t1", ProjectID: testProject,
		Username: "john@example.com", Queue: tasks.QueueSignup, Status: outcome.StatusSent, HTTPStatus: 204}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", from.URL}, "--from and --to are required"},
		{[]string{"--from", from.URL, "--to", from.URL}, "same Redis"},
		{[]string{"--from", from.URL, "--to", to.URL}, "--yes"},
	} {
		if r := runCLI(t, nil, append([]string{"migrate"}, c.args...)...); r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("migrate %v: %+v; want exit status 2 naming %q", c.args, r, c.want)
		}
	}
	if n := to.Client(t).DBSize(ctx).Val(); n != 0 {
		t.Fatalf("a refused migrate wrote %d keys", n)
	}
	r := runCLI(t, nil, "migrate", "--from", from.URL, "--to", to.URL, "--yes", "--json")
	var sum enqueue.MigrateSummary
	if err := json.Unmarshal([]byte(r.stdout), &sum); r.code != 0 || err != nil || sum.Records != 1 {
		t.Fatalf("migrate: %+v (%v); want 1 record copied", r, err)
	}
	if rec, ok, err := outcome.NewStore(to.Client(t), outcome.Options{}).Latest(ctx, "", "john@example.com"); err != nil || !ok || rec.TaskID != "t1" {
		t.Fatalf("john's record on the destination: %+v, %v, %v", rec, ok, err)
	}
}
