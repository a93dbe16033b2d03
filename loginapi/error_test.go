package loginapi_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/resendq/resendq/loginapi"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Truncate(time.Second) // HTTP dates are in whole seconds
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"120", 120 * time.Second, true},
		{"0", 0, true},
		{" 5 ", 5 * time.Second, true},
		{"86400000", 86400000 * time.Second, true}, // not capped here
		{now.Add(2 * time.Minute).Format(http.TimeFormat), 2 * time.Minute, true},
		{now.Add(30 * time.Second).Format(time.RFC850), 30 * time.Second, true},
		{now.Add(45 * time.Second).Format(time.ANSIC), 45 * time.Second, true},
		{now.Format(http.TimeFormat), 0, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"", 0, false},
		{"-1", 0, false},
		{"+5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"99999999999999999999", 0, false},
		{"9223372037", 0, false}, // seconds that overflow a Duration
	}
	for _, tt := range tests {
		got, ok := loginapi.ParseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ParseRetryAfter(%q) = (%v, %v), want (%v, %v)", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestErrorText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  *loginapi.Error
		want string
	}{
		{&loginapi.Error{StatusCode: 404, Code: "003-002", Description: "User not found."}, "login api 404 003-002: User not found."},
		{&loginapi.Error{StatusCode: 503, Description: "Service Unavailable"}, "login api 503: Service Unavailable"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func response(status int, body string, retryAfter string) *http.Response {
	h := http.Header{}
	if retryAfter != "" {
		h.Set("Retry-After", retryAfter)
	}
	return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body))}
}

func TestCheckResponse(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Truncate(time.Second) // HTTP dates are in whole seconds
	tests := []struct {
		name       string
		status     int
		body, retr string
		want       *loginapi.Error
	}{
		{"2xx", 204, "", "", nil},
		{"json", 422, `{"error":{"code":"003-061","description":"Object not found.","details":{}}}`, "",
			&loginapi.Error{StatusCode: 422, Code: "003-061", Description: "Object not found."}},
		{"numeric code", 400, `{"error":{"code":0,"description":"Invalid parameters"}}`, "",
			&loginapi.Error{StatusCode: 400, Code: "0", Description: "Invalid parameters"}},
		{"no description", 404, `{"error":{"code":"003-002"}}`, "",
			&loginapi.Error{StatusCode: 404, Code: "003-002", Description: "Not Found"}},
		{"other json", 400, `{"message":"nope"}`, "", &loginapi.Error{StatusCode: 400, Description: "Bad Request"}},
		{"json array", 400, `[1]`, "", &loginapi.Error{StatusCode: 400, Description: "Bad Request"}},
		{"empty", 502, "", "", &loginapi.Error{StatusCode: 502, Description: "Bad Gateway"}},
		{"truncated json", 400, `{"error":{"code":"0"` + strings.Repeat(" ", 70<<10) + `}}`, "",
			&loginapi.Error{StatusCode: 400, Description: "Bad Request"}},
		{"retry-after on 503", 503, "", "7", &loginapi.Error{StatusCode: 503, Description: "Service Unavailable", RetryAfter: 7 * time.Second}},
	}
	for _, tt := range tests {
		err := loginapi.CheckResponse(response(tt.status, tt.body, tt.retr), now)
		if tt.want == nil {
			if err != nil {
				t.Errorf("%s: err = %v, want nil", tt.name, err)
			}
			continue
		}
		var got *loginapi.Error
		if !errors.As(err, &got) || *got != *tt.want {
			t.Errorf("%s: err = %#v, want %#v", tt.name, err, tt.want)
		}
	}
}

func TestCheckResponseNilBody(t *testing.T) {
	t.Parallel()
	err := loginapi.CheckResponse(&http.Response{StatusCode: 500, Header: http.Header{}}, time.Now())
	if err == nil || err.Error() != "login api 500: Internal Server Error" {
		t.Errorf("err = %v", err)
	}
}

func TestIsRateLimited(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want bool
	}{
		{&loginapi.Error{StatusCode: 429}, true},
		{fmt.Errorf("attempt 3: %w", &loginapi.Error{StatusCode: 429}), true},
		{&loginapi.Error{StatusCode: 503}, false},
		{errors.New("429"), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := loginapi.IsRateLimited(tt.err); got != tt.want {
			t.Errorf("IsRateLimited(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
