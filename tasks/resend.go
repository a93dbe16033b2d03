// Package tasks is the contract between producers and workers: the task type
// name, the payload of a "resend confirmation email" task, its validation and
// the asynq options every resend task is enqueued with.
package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
)

// TypeResend is the asynq task type of a confirmation-email resend. It is a
// stable string of ours, never a Go type name: queued tasks outlive renames.
const TypeResend = "resendq:resend_confirmation"

// Queue names. Single enqueues (signup services, the CLI, the HTTP API) go to
// QueueSignup; batch resends go to QueueBulk so they never delay new signups.
const (
	QueueSignup = "signup"
	QueueBulk   = "bulk"
)

// Limits applied by Validate and Warnings.
const (
	// MaxUsernameLen is the longest username (or email address) accepted, in characters.
	MaxUsernameLen = 255
	// PayloadWarnLen is the payload length from which the Login API recommends against sending it.
	PayloadWarnLen = 500
	// MaxPayloadLen is the hard limit on the payload, in bytes; longer payloads are rejected.
	MaxPayloadLen = 64 << 10
)

// MaxRetry is the asynq MaxRetry every resend task carries. The worker enforces
// its own attempt limit (--max-attempts, at most MaxRetry) and decides every
// final outcome itself; this only keeps asynq from archiving a rate-limited
// task behind the worker's back.
const MaxRetry = 100

// Resend is the payload of a TypeResend task: one request to resend the
// account confirmation email to one user of one Login project.
type Resend struct {
	// ProjectID is the Login project ID, a UUID. Required.
	ProjectID string `json:"project_id"`
	// Username is the user's username or email address. Required.
	Username string `json:"username"`
	// LoginURL, when set, must equal one of the project's Callback URLs.
	LoginURL string `json:"login_url,omitempty"`
	// Payload is custom data returned in the user JWT (custom user storage only).
	Payload string `json:"payload,omitempty"`
	// BatchID names the batch a bulk resend belongs to; empty for single enqueues.
	BatchID string `json:"batch_id,omitempty"`
	// ReplayOf is the task ID of the dead letter this task replays; empty
	// for a first try. Set by the replay.
	ReplayOf string `json:"replay_of,omitempty"`
	// EnqueuedAt is when the producer enqueued the task; set by the enqueuer.
	EnqueuedAt time.Time `json:"enqueued_at"`
}

// ValidationError says which field of a Resend is wrong and why.
type ValidationError struct {
	Field   string // the payload's JSON name: project_id, username, login_url, payload
	Problem string // what is wrong, e.g. "must be a UUID"
}

func (e *ValidationError) Error() string { return e.Field + " " + e.Problem }

// Normalize trims surrounding white space from every field.
func (r Resend) Normalize() Resend {
	r.ProjectID = strings.TrimSpace(r.ProjectID)
	r.Username = strings.TrimSpace(r.Username)
	r.LoginURL = strings.TrimSpace(r.LoginURL)
	return r
}

// Validate reports the first field that breaks the endpoint's contract, as a
// *ValidationError, or nil. Error texts never repeat the username, which may
// be an email address.
func (r Resend) Validate() error {
	if r.ProjectID == "" {
		return &ValidationError{"project_id", "is required"}
	}
	if !IsUUID(r.ProjectID) {
		return &ValidationError{"project_id", fmt.Sprintf("%q must be a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", r.ProjectID)}
	}
	if r.Username == "" {
		return &ValidationError{"username", "is required"}
	}
	if n := utf8.RuneCountInString(r.Username); n > MaxUsernameLen {
		return &ValidationError{"username", fmt.Sprintf("is %d characters long; at most %d are allowed", n, MaxUsernameLen)}
	}
	if !utf8.ValidString(r.Username) || strings.ContainsAny(r.Username, "\x00\r\n") {
		return &ValidationError{"username", "contains invalid characters"}
	}
	if r.LoginURL != "" {
		if err := checkURL(r.LoginURL); err != nil {
			return &ValidationError{"login_url", fmt.Sprintf("%q %s", r.LoginURL, err)}
		}
	}
	if len(r.Payload) > MaxPayloadLen {
		return &ValidationError{"payload", fmt.Sprintf("is %d bytes long; at most %d are allowed", len(r.Payload), MaxPayloadLen)}
	}
	return nil
}

// Warnings lists what is accepted but probably a mistake (a payload over the
// recommended 500 characters).
func (r Resend) Warnings() []string {
	if n := utf8.RuneCountInString(r.Payload); n > PayloadWarnLen {
		return []string{fmt.Sprintf("payload is %d characters long; the Login API recommends less than %d", n, PayloadWarnLen)}
	}
	return nil
}

// IsUUID reports whether s is a UUID in its canonical 36-character form.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("is not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an absolute http(s) URL")
	}
	if u.Host == "" {
		return errors.New("has no host")
	}
	return nil
}

// NewTask validates r and builds its asynq task. Options (queue, task ID) are
// the caller's; see Options.
func NewTask(r Resend) (*asynq.Task, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode resend payload: %w", err)
	}
	return asynq.NewTask(TypeResend, b), nil
}

// Options are the asynq options of a resend task with the given ID in queue.
func Options(queue, taskID string) []asynq.Option {
	return []asynq.Option{asynq.Queue(queue), asynq.TaskID(taskID), asynq.MaxRetry(MaxRetry)}
}

// Decode parses and validates a task payload. A payload that fails either
// step can never succeed: the worker dead-letters it with reason "invalid".
func Decode(payload []byte) (Resend, error) {
	var r Resend
	if err := json.Unmarshal(payload, &r); err != nil {
		return r, fmt.Errorf("payload is not a resend task: %w", err)
	}
	if err := r.Validate(); err != nil {
		return r, err
	}
	return r, nil
}

// MaskEmail hides most of the local part of an email address for logs:
// "john@example.com" becomes "jo***@example.com". A username that is not an
// email address keeps its first two characters.
func MaskEmail(s string) string {
	local, domain, isEmail := strings.Cut(s, "@")
	if !isEmail {
		local, domain = s, ""
	}
	keep := 2
	if utf8.RuneCountInString(local) <= 2 {
		keep = 1
	}
	var b strings.Builder
	for _, r := range local {
		if keep == 0 {
			break
		}
		b.WriteRune(r)
		keep--
	}
	b.WriteString("***")
	if isEmail {
		b.WriteByte('@')
		b.WriteString(domain)
	}
	return b.String()
}
