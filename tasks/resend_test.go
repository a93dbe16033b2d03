package tasks

import (
	"errors"
	"strings"
	"testing"
)

const project = "6f1c3a52-1d8e-4b55-9c1e-0d9a7e3f2b11"

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := Resend{ProjectID: project, Username: "john@example.com"}
	cases := []struct {
		name  string
		edit  func(*Resend)
		field string
	}{
		{"valid", func(*Resend) {}, ""},
		{"valid with login_url and payload", func(r *Resend) { r.LoginURL = "https://example.com/cb?x=1"; r.Payload = "p" }, ""},
		{"missing project", func(r *Resend) { r.ProjectID = "" }, "project_id"},
		{"project not a UUID", func(r *Resend) { r.ProjectID = "abc" }, "project_id"},
		{"project UUID in braces", func(r *Resend) { r.ProjectID = "{" + project + "}" }, "project_id"},
		{"empty username", func(r *Resend) { r.Username = "" }, "username"},
		{"username too long", func(r *Resend) { r.Username = strings.Repeat("é", 256) }, "username"},
		{"username of 255 runes", func(r *Resend) { r.Username = strings.Repeat("é", 255) }, ""},
		{"username with newline", func(r *Resend) { r.Username = "a\nb" }, "username"},
		{"relative login_url", func(r *Resend) { r.LoginURL = "/callback" }, "login_url"},
		{"ftp login_url", func(r *Resend) { r.LoginURL = "ftp://example.com/" }, "login_url"},
		{"login_url without host", func(r *Resend) { r.LoginURL = "https://" }, "login_url"},
		{"huge payload", func(r *Resend) { r.Payload = strings.Repeat("x", MaxPayloadLen+1) }, "payload"},
	}
	for _, c := range cases {
		r := ok
		c.edit(&r)
		err := r.Validate()
		var ve *ValidationError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: unexpected error %v", c.name, err)
		case c.field != "" && (!errors.As(err, &ve) || ve.Field != c.field):
			t.Errorf("%s: error %v, want one on %s", c.name, err, c.field)
		case err != nil && strings.Contains(err.Error(), r.Username) && r.Username != "":
			t.Errorf("%s: error %q repeats the username", c.name, err)
		}
	}
}

func TestWarningsOnLongPayload(t *testing.T) {
	t.Parallel()
	r := Resend{ProjectID: project, Username: "j", Payload: strings.Repeat("x", 501)}
	if w := r.Warnings(); len(w) != 1 || !strings.Contains(w[0], "501") {
		t.Errorf("warnings = %v", w)
	}
	r.Payload = strings.Repeat("x", 500)
	if w := r.Warnings(); len(w) != 0 {
		t.Errorf("warnings for 500 characters: %v", w)
	}
}

func TestNewTaskAndDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	in := Resend{ProjectID: project, Username: "john@example.com", LoginURL: "https://example.com/cb", Payload: "{}", BatchID: "b1"}
	task, err := NewTask(in)
	if err != nil {
		t.Fatal(err)
	}
	if task.Type() != TypeResend || TypeResend != "resendq:resend_confirmation" {
		t.Errorf("type %q: the task type string is a stable contract", task.Type())
	}
	out, err := Decode(task.Payload())
	if err != nil || out.Username != in.Username || out.LoginURL != in.LoginURL || out.BatchID != "b1" {
		t.Errorf("Decode = %+v, %v", out, err)
	}
	if _, err := NewTask(Resend{}); err == nil {
		t.Error("NewTask accepted an empty resend")
	}
	if _, err := Decode([]byte("not json")); err == nil {
		t.Error("Decode accepted garbage")
	}
}

func TestNormalizeTrims(t *testing.T) {
	t.Parallel()
	r := Resend{ProjectID: " " + project + "\n", Username: "  j@example.com "}.Normalize()
	if r.ProjectID != project || r.Username != "j@example.com" {
		t.Errorf("Normalize = %+v", r)
	}
}

func TestMaskEmail(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"john@example.com": "jo***@example.com",
		"j@example.com":    "j***@example.com",
		"jo@example.com":   "j***@example.com",
		"@example.com":     "***@example.com",
		"johnsmith":        "jo***",
		"émile@example.fr": "ém***@example.fr",
		"":                 "***",
	} {
		if got := MaskEmail(in); got != want {
			t.Errorf("MaskEmail(%q) = %q, want %q", in, got, want)
		}
	}
}
