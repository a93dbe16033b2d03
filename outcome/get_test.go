package outcome

import "testing"

func TestGetByTaskID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, ok, err := b.store.Get(b.ctx, "nope"); ok || err != nil {
		t.Fatalf("Get of a task without a record = %v, %v", ok, err)
	}
	if _, err := b.store.Finish(b.ctx, dead("t1", "p", "u@example.com", ReasonRejected, "003-002")); err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.store.Get(b.ctx, "t1")
	if err != nil || !ok || got.Status != StatusDeadLetter || got.ErrorCode != "003-002" || got.Username != "u@example.com" {
		t.Errorf("Get = %+v, %v, %v", got, ok, err)
	}
}
