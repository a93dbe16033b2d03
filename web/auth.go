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
// or as the password of HTTP Basic, and answers 401 to the others. An empty
// token lets everything through.
//
// Both sides are hashed before the constant-time comparison, so that neither
// the token's content nor its length shows in the time taken.
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		given, ok := credential(r)
		got := sha256.Sum256([]byte(given))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 && ok {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="`+Realm+`", charset="UTF-8"`)
		writeText(w, http.StatusUnauthorized, "unauthorized")
	})
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
