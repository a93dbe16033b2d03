package fake

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

const (
	endpointPath = "/user/resend_confirmation_link"
	// maxBodyBytes is the largest request body accepted; the real body is
	// {"username":"..."} with a username of at most a few hundred bytes.
	maxBodyBytes = 16 << 10
	codeInvalid  = "0"
	descInvalid  = "Invalid parameters"
)

// answer is what the API writes back.
type answer struct {
	status      int
	code        string // error.code, for non-2xx
	description string // error.description, for non-2xx
	retryAfter  string // Retry-After header; "" for none
}

func reject(status int, code, description string) answer {
	return answer{status: status, code: code, description: description}
}

func tooManyRequests(retryAfter string) answer {
	return answer{status: http.StatusTooManyRequests, code: codeInvalid, description: "Too many requests", retryAfter: retryAfter}
}

// answer is the answer of b to the n-th call (1-based) it numbers.
func (b *Behavior) answer(n int64) answer {
	if n <= int64(b.RateLimited) {
		return tooManyRequests(b.RetryAfter)
	}
	if n-int64(b.RateLimited) <= int64(b.ServerErrors) {
		return reject(http.StatusServiceUnavailable, codeInvalid, http.StatusText(http.StatusServiceUnavailable))
	}
	a := answer{status: b.Status, code: b.Code, description: b.Description}
	if a.status == 0 {
		a.status = http.StatusNoContent
	}
	if a.code == "" {
		a.code = codeInvalid
	}
	if a.description == "" {
		a.description = http.StatusText(a.status)
	}
	return a
}

// errorJSON is the API's error shape.
type errorJSON struct {
	Error struct {
		Code        string   `json:"code"`
		Description string   `json:"description"`
		Details     struct{} `json:"details"`
	} `json:"error"`
}

// write sends the answer: headers only for 2xx, the JSON error otherwise.
func (a answer) write(w http.ResponseWriter) {
	h := w.Header()
	if a.retryAfter != "" {
		h.Set("Retry-After", a.retryAfter)
	}
	if a.status == http.StatusMethodNotAllowed {
		h.Set("Allow", http.MethodPost)
	}
	if a.status >= 200 && a.status < 300 {
		w.WriteHeader(a.status)
		return
	}
	var e errorJSON
	e.Error.Code, e.Error.Description = a.code, a.description
	body, _ := json.Marshal(&e) // cannot fail: strings only
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(a.status)
	_, _ = w.Write(body)
}

// inspect records what the request carries and checks it against the
// contract, in the order the answer is chosen: method, path, projectId,
// Content-Type, body. valid is false when ans is a rejection.
func inspect(r *http.Request) (c Call, ans answer, valid bool) {
	c.At = time.Now()
	q := r.URL.Query()
	pid := q.Get("projectId")
	c.ProjectID, c.LoginURL, c.Payload = keep(pid), keep(q.Get("login_url")), keep(q.Get("payload"))
	username, bodyOK := readUsername(r.Body)
	c.Username = username
	if len(username) > maxRecordedLen {
		c.Username = keep(username)
	}
	switch {
	case r.Method != http.MethodPost:
		return c, reject(http.StatusMethodNotAllowed, codeInvalid, http.StatusText(http.StatusMethodNotAllowed)), false
	case !strings.HasSuffix(r.URL.Path, endpointPath):
		return c, reject(http.StatusNotFound, codeInvalid, http.StatusText(http.StatusNotFound)), false
	case pid == "":
		return c, reject(http.StatusBadRequest, "002-028", "Parameter projectId is missing."), false
	case !isUUID(pid):
		return c, reject(http.StatusBadRequest, "002-027", "Parameter projectId is invalid."), false
	case !isJSONContentType(r.Header.Get("Content-Type")):
		return c, reject(http.StatusBadRequest, codeInvalid, descInvalid), false
	case !bodyOK:
		return c, reject(http.StatusBadRequest, codeInvalid, descInvalid), false
	}
	return c, answer{}, true
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readUsername reads a body that must be a JSON object with exactly the key
// "username", a non-empty string.
func readUsername(body io.Reader) (string, bool) {
	if body == nil {
		return "", false
	}
	buf := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(buf)
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(body, maxBodyBytes+1))
	if err != nil || n > maxBodyBytes {
		return "", false
	}
	return parseUsername(buf.Bytes())
}

// parseUsername has a fast path for the usual {"username":"plain text"}
// and falls back to encoding/json for anything else.
func parseUsername(b []byte) (string, bool) {
	b = bytes.TrimSpace(b)
	const head, tail = `{"username":"`, `"}`
	if len(b) > len(head)+len(tail) && bytes.HasPrefix(b, []byte(head)) && bytes.HasSuffix(b, []byte(tail)) {
		if s := b[len(head) : len(b)-len(tail)]; isPlain(s) {
			return string(s), true
		}
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(b, &obj) != nil || len(obj) != 1 {
		return "", false
	}
	raw, ok := obj["username"]
	var s string
	if !ok || json.Unmarshal(raw, &s) != nil || s == "" {
		return "", false
	}
	return s, true
}

// isPlain reports whether s is valid UTF-8 needing no JSON unescaping.
func isPlain(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.Valid(s)
}

// isUUID reports whether s is a UUID in canonical 36-character form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// isJSONContentType accepts application/json with or without parameters.
func isJSONContentType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}
