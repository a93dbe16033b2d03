package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/resendq/resendq/tasks"
)

// resendView is a resend payload with the username first, so that it shows
// even where the UI cuts the payload short. Its JSON names are those of
// tasks.Resend.
type resendView struct {
	Username   string     `json:"username"`
	ProjectID  string     `json:"project_id"`
	LoginURL   string     `json:"login_url,omitempty"`
	Payload    string     `json:"payload,omitempty"`
	BatchID    string     `json:"batch_id,omitempty"`
	EnqueuedAt *time.Time `json:"enqueued_at,omitempty"`
}

// formatBytes shows a task payload or result in the UI: a resend payload as
// indented JSON with the username first, other JSON indented as it is, other
// printable text as is, and anything else as its size. Nothing is masked:
// the UI is for those allowed to see users' addresses.
func formatBytes(taskType string, b []byte) string {
	if taskType == tasks.TypeResend {
		if s, ok := formatResend(b); ok {
			return s
		}
	}
	if json.Valid(b) {
		var buf bytes.Buffer
		if json.Indent(&buf, b, "", "  ") == nil {
			return buf.String()
		}
	}
	if len(b) == 0 {
		return "(empty)"
	}
	if !utf8.Valid(b) || strings.IndexFunc(string(b), func(r rune) bool {
		return !unicode.IsPrint(r) && !unicode.IsSpace(r)
	}) >= 0 {
		return fmt.Sprintf("(%d bytes, not text)", len(b))
	}
	return string(b)
}

// formatResend reorders a resend payload; ok is false when b has fields
// resendView lacks or is not one JSON object, so that nothing is hidden.
func formatResend(b []byte) (string, bool) {
	var v resendView
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if dec.Decode(&v) != nil || dec.More() {
		return "", false
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", false
	}
	return string(out), true
}
