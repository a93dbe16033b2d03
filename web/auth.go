package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// Realm is the realm of the Basic challenge sent with a 401.
const Realm = "resendq"

// requireToken lets through requests that carry token, as a Bearer token
// or as the password of HTTP Basic; requests that carry producer reach the
// resend endpoints only (403 elsewhere); the others get 401. An empty
// token lets everything through.
//
// Both sides are hashed before the constant-time comparison, so that neither
// the token's content nor its length shows in the time taken.
func requireToken(token, producer string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := sha256.Sum256([]byte(token))
	wantProducer := sha256.Sum256([]byte(producer))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		given, ok := credential(r)
		got := sha256.Sum256([]byte(given))
		switch {
		case ok && subtle.ConstantTimeCompare(got[:], want[:]) == 1:
			next.ServeHTTP(w, r)
			return
		case ok && producer != "" && subtle.ConstantTimeCompare(got[:], wantProducer[:]) == 1:
			if producerRoute(r) {
				next.ServeHTTP(w, r)
				return
			}
			if strings.HasPrefix(r.URL.Path, "/api/") {
				writeError(w, http.StatusForbidden, codeForbidden, "the producer token may only enqueue resends and look them up (/api/v1/resends)")
				return
			}
			writeText(w, http.StatusForbidden, "forbidden: the producer token may only enqueue resends and look them up")
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="`+Realm+`", charset="UTF-8"`)
		if strings.HasPrefix(r.URL.Path, "/api/") {
			writeError(w, http.StatusUnauthorized, codeUnauthorized, "send the token as \"Authorization: Bearer <token>\"")
			return
		}
		writeText(w, http.StatusUnauthorized, "unauthorized")
	})
}

// producerRoute reports whether r goes to an endpoint the producer token
// reaches.
func producerRoute(r *http.Request) bool {
	p := r.URL.Path
	switch r.Method {
	case http.MethodPost:
		return p == "/api/v1/resends" || p == "/api/v1/resends:batch"
	case http.MethodGet, http.MethodHead:
		return resendPath(p)
	}
	return false
}

// credential returns the token a request carries: the Bearer token of its
// Authorization header, or the password of its HTTP Basic credentials.
func credential(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if scheme, rest, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(rest), true
	}
	if _, password, ok := r.BasicAuth(); ok {
		return password, true
	}
	return "", false
}

// resendPath reports whether p is the path of one resend,
// /api/v1/resends/{task_id}.
func resendPath(p string) bool { return itemPath(p, "/api/v1/resends/") }

// outcomePath reports whether p is /api/v1/outcomes/{task_id} (or
// /api/v1/outcomes/stats).
func outcomePath(p string) bool { return itemPath(p, "/api/v1/outcomes/") }

// itemPath reports whether p is prefix and one non-empty path segment.
func itemPath(p, prefix string) bool {
	id, ok := strings.CutPrefix(p, prefix)
	return ok && id != "" && !strings.Contains(id, "/")
}
