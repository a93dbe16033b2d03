package web

import (
	"testing"

	"github.com/resendq/resendq/tasks"
)

func TestFormatBytes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		taskType, in, want string
	}{
		{tasks.TypeResend, `{"project_id":"p","username":"john@example.com","enqueued_at":"2026-11-25T10:00:00Z"}`,
			"{\n  \"username\": \"john@example.com\",\n  \"project_id\": \"p\",\n  \"enqueued_at\": \"2026-11-25T10:00:00Z\"\n}"},
		{tasks.TypeResend, `{"project_id":"p","username":"j@x.io","extra":1}`,
			"{\n  \"project_id\": \"p\",\n  \"username\": \"j@x.io\",\n  \"extra\": 1\n}"},
		{tasks.TypeResend, `{"username":"b@x.io","project_id":"bad"}`, "{\n  \"username\": \"b@x.io\",\n  \"project_id\": \"bad\"\n}"},
		{tasks.TypeResend, `{"project_id":"not a uuid"`, `{"project_id":"not a uuid"`},
		{"other", `{"b":1,"a":2}`, "{\n  \"b\": 1,\n  \"a\": 2\n}"},
		{"other", `not json at all`, "not json at all"},
		{"other", "", "(empty)"},
		{"other", "\x00\x01\x02", "(3 bytes, not text)"},
		{"other", "\xff\xfe", "(2 bytes, not text)"},
	} {
		if got := formatBytes(c.taskType, []byte(c.in)); got != c.want {
			t.Errorf("formatBytes(%q, %q) = %q, want %q", c.taskType, c.in, got, c.want)
		}
	}
}
