package loginapi

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzErrorBody: any answer of the API turns into a *Error without a
// panic, with a description to show and the status as given.
// Seeds: testdata/fuzz/FuzzErrorBody.
func FuzzErrorBody(f *testing.F) {
	f.Add(404, []byte(`{"error":{"code":"003-002","description":"User not found.","details":{}}}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 300 || status > 999 {
			return
		}
		resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(string(body)))}
		err := CheckResponse(resp, time.Now())
		e, ok := err.(*Error)
		if !ok {
			t.Fatalf("CheckResponse(%d, %q) = %v, want a *Error", status, body, err)
		}
		if e.StatusCode != status || e.Description == "" && http.StatusText(status) != "" || !strings.HasPrefix(e.Error(), "login api "+strconv.Itoa(status)) {
			t.Fatalf("CheckResponse(%d, %q) = %+v (%q)", status, body, *e, e.Error())
		}
	})
}

// FuzzRetryAfter: ParseRetryAfter never panics nor answers a negative
// wait, and reads whole seconds exactly.
// Seeds: testdata/fuzz/FuzzRetryAfter.
func FuzzRetryAfter(f *testing.F) {
	f.Add("120")
	f.Fuzz(func(t *testing.T, v string) {
		now := time.Now()
		d, ok := ParseRetryAfter(v, now)
		if d < 0 || !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %s, %v", v, d, ok)
		}
		if s := strings.TrimSpace(v); ok && s != "" && isDigits(s) {
			secs, _ := strconv.ParseInt(s, 10, 64)
			if d != time.Duration(secs)*time.Second {
				t.Fatalf("ParseRetryAfter(%q) = %s, want %d seconds", v, d, secs)
			}
		}
	})
}
