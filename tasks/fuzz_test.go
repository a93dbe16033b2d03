package tasks

import (
	"encoding/json"
	"testing"
)

// FuzzDecode: whatever a producer put in a task, Decode never panics, and
// a payload it accepts is valid and survives being encoded again.
// Seeds: testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"project_id":"6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11","username":"john@example.com"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := Decode(payload)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("Decode accepted %q, which does not validate: %v", payload, err)
		}
		task, err := NewTask(r)
		if err != nil {
			t.Fatalf("NewTask of a decoded payload: %v", err)
		}
		again, err := Decode(task.Payload())
		if err != nil {
			t.Fatalf("Decode of its own encoding %q: %v", task.Payload(), err)
		}
		a, _ := json.Marshal(r)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Fatalf("round trip changed the task:\n%s\n%s", a, b)
		}
	})
}
