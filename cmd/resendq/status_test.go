package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/resendq/resendq/internal/redistest"
	"github.com/resendq/resendq/ratelimit"
)

// otherProject is a second Login project.
const otherProject = "0b8c6f1e-6b9a-4e4f-9d2c-5f3a1b2c3d4e"

func TestStatusShowsOutagesPausesAndRates(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	r := runCLI(t, nil, "status", "--redis-url", srv.URL)
	if r.code != 0 || !strings.Contains(r.stdout, "no project has") {
		t.Fatalf("status of a quiet fleet: %+v", r)
	}
	ctx := context.Background()
	l := ratelimit.New(srv.Client(t), ratelimit.Options{OutageMinFailures: 1, ReportInterval: 10 * time.Millisecond, ProbeInterval: time.Minute})
	deadline := time.Now().Add(10 * time.Second)
	for open := false; !open; {
		if _, err := l.Done(ctx, testProject, ratelimit.Failed, false); err != nil {
			t.Fatal(err)
		}
		for _, st := range l.Local() {
			open = open || st.Project == testProject && st.Open
		}
		if time.Now().After(deadline) {
			t.Fatal("the circuit did not open")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, _, err := l.CoolDown(ctx, otherProject, time.Minute); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, nil, "status", "--redis-url", srv.URL)
	if r.code != 0 || !strings.Contains(r.stdout, testProject+"  OPEN") || !strings.Contains(r.stdout, "calls failed") || !strings.Contains(r.stdout, otherProject) {
		t.Errorf("status: %+v", r)
	}
	r = runCLI(t, nil, "status", "--redis-url", srv.URL, "--json")
	var got struct{ Projects []map[string]any }
	if err := json.Unmarshal([]byte(r.stdout), &got); r.code != 0 || err != nil || len(got.Projects) != 2 ||
		got.Projects[0]["project_id"] != otherProject || got.Projects[0]["paused_seconds"] == nil || got.Projects[1]["circuit_open"] != true {
		t.Errorf("status --json: %+v (%v)", r, err)
	}
}
