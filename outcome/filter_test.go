package outcome

import (
	"errors"
	"testing"
	"time"
)

func TestParseFilter(t *testing.T) {
	t.Parallel()
	now := time.Now()
	f, err := ParseFilter(map[string]string{
		"username": " bob@example.com ", "project_id": "p", "status": "dead_letter", "reason": "rejected",
		"code": "003-002", "batch_id": "b1", "since": "24h", "until": now.Format(time.RFC3339Nano), "limit": "7", "cursor": "",
	}, now)
	want := Filter{Username: "bob@example.com", ProjectID: "p", Status: StatusDeadLetter, Reason: ReasonRejected,
		Code: "003-002", BatchID: "b1", Since: now.Add(-24 * time.Hour), Limit: 7}
	if err != nil || !f.Until.Equal(now) {
		t.Fatalf("ParseFilter = %+v, %v", f, err)
	}
	f.Until = time.Time{}
	if f != want {
		t.Errorf("ParseFilter = %+v, want %+v", f, want)
	}
	for params, want := range map[string]FieldError{
		"status=bounced":  {Field: "status", Value: "bounced", Problem: "want one of sent, dead_letter"},
		"reason=lost":     {Field: "reason", Value: "lost"},
		"sent+rejected":   {Field: "reason", Value: "rejected"},
		"limit=0":         {Field: "limit", Value: "0"},
		"limit=ten":       {Field: "limit", Value: "ten"},
		"since=yesterday": {Field: "since", Value: "yesterday"},
		"until=-1h":       {Field: "until", Value: "-1h"},
		"since>until":     {Field: "since"},
		"cursor=%%":       {Field: "cursor", Value: "%%"},
		"user=bob":        {Field: "user"},
	} {
		p := map[string]map[string]string{
			"status=bounced": {"status": "bounced"}, "reason=lost": {"reason": "lost"},
			"sent+rejected": {"status": "sent", "reason": "rejected"}, "limit=0": {"limit": "0"}, "limit=ten": {"limit": "ten"},
			"since=yesterday": {"since": "yesterday"}, "until=-1h": {"until": "-1h"}, "since>until": {"since": "1h", "until": "2h"},
			"cursor=%%": {"cursor": "%%"}, "user=bob": {"user": "bob"},
		}[params]
		_, err := ParseFilter(p, now)
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) || fe.Field != want.Field ||
			want.Value != "" && fe.Value != want.Value || want.Problem != "" && fe.Problem != want.Problem {
			t.Errorf("%s: %#v, want a FieldError like %+v", params, err, want)
		}
	}
	if got := (&FieldError{Field: "project_id", Value: "x", Problem: "want a UUID"}).Describe("--project-id"); got != `--project-id "x": want a UUID` {
		t.Errorf("Describe = %q", got)
	}
}
