package enqueue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"
)

// DefaultIdempotencyWindow is how long an idempotency key is kept when
// Options.IdempotencyWindow is zero.
const DefaultIdempotencyWindow = 24 * time.Hour

// MaxIdempotencyKeyLen is the longest idempotency key accepted, in bytes.
const MaxIdempotencyKeyLen = 255

// ErrIdempotencyConflict is the error of Once when the key was used for
// another request within the window.
var ErrIdempotencyConflict = errors.New("the Idempotency-Key was used for another request; use a new key for a new request")

// CheckIdempotencyKey reports what is wrong with an idempotency key: empty,
// longer than MaxIdempotencyKeyLen, or holding spaces or control characters.
func CheckIdempotencyKey(key string) error {
	switch {
	case key == "":
		return errors.New("is empty")
	case len(key) > MaxIdempotencyKeyLen:
		return fmt.Errorf("is %d bytes long; at most %d are allowed", len(key), MaxIdempotencyKeyLen)
	}
	for _, r := range key {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' {
			return errors.New("must be printable ASCII without spaces (a UUID is a good key)")
		}
	}
	return nil
}

// idemBeginScript starts a request under an idempotency key: a key not seen
// within the window (ARGV[2] ms) is taken for the request's fingerprint
// (ARGV[1]) and marked pending. It returns {"new"}, {"conflict"} when the
// key holds another fingerprint, {"pending"} when a request with the same
// fingerprint began and did not finish (it runs still, or it failed), or
// {"done", the stored answer}.
var idemBeginScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1] .. ' pending', 'PX', ARGV[2])
  return {'new'}
end
local sp = string.find(v, ' ', 1, true)
if not sp or string.sub(v, 1, sp - 1) ~= ARGV[1] then return {'conflict'} end
local rest = string.sub(v, sp + 1)
if string.sub(rest, 1, 5) == 'done ' then return {'done', string.sub(rest, 6)} end
return {'pending'}
`)

// idemFinishScript stores the answer (ARGV[2]) of the request with the
// fingerprint ARGV[1], for what is left of the key's window, unless an
// answer is stored already (a request racing with the same key finished
// first: the first answer stays).
var idemFinishScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] .. ' pending' then
  redis.call('SET', KEYS[1], ARGV[1] .. ' done ' .. ARGV[2], 'KEEPTTL')
  return 1
end
return 0
`)

// Once runs do at most once to completion for an idempotency key within
// the idempotency window, and returns its answer: a request repeated with
// the same key and the same fingerprint (what the request asks for, as the
// caller encodes it) gets the stored answer back with replayed set, and no
// second task. The same key with another fingerprint is
// ErrIdempotencyConflict. The task IDs do gives its tasks come from taskID,
// derived from the key and the fingerprint, so that a repeat of a request
// that failed halfway,
// or that runs at the same time, finds the first one's tasks (Enqueue and
// EnqueueMany treat a task ID that exists, or whose outcome is recorded, as
// a duplicate). A failed do stores nothing: a repeat runs it again.
func (e *Enqueuer) Once(ctx context.Context, key string, fingerprint []byte, do func(ctx context.Context, taskID func(i int) string) ([]byte, error)) (answer []byte, replayed bool, err error) {
	if err := CheckIdempotencyKey(key); err != nil {
		return nil, false, fmt.Errorf("Idempotency-Key %w", err)
	}
	fp := fingerprintOf(fingerprint)
	k := e.idemKey(key)
	res, err := idemBeginScript.Run(ctx, e.rdb, []string{k}, fp, e.opts.IdempotencyWindow.Milliseconds()).StringSlice()
	if err != nil {
		return nil, false, fmt.Errorf("enqueue: idempotency key: %w", err)
	}
	switch res[0] {
	case "conflict":
		return nil, false, ErrIdempotencyConflict
	case "done":
		if len(res) == 2 {
			return []byte(res[1]), true, nil
		}
	}
	answer, err = do(ctx, idemTaskIDs(key, fp))
	if err != nil {
		return nil, false, err
	}
	if err := e.tryAgain(func() error {
		return idemFinishScript.Run(context.WithoutCancel(ctx), e.rdb, []string{k}, fp, answer).Err()
	}); err != nil {
		// The tasks exist; a repeat finds them by their IDs.
		return answer, false, nil
	}
	return answer, false, nil
}

// fingerprintOf is the short form of a request's fingerprint kept in Redis.
func fingerprintOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// idemKey is the Redis key of an idempotency key (hashed: keys are the
// clients' own strings).
func (e *Enqueuer) idemKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return e.opts.KeyPrefix + "idem:" + hex.EncodeToString(sum[:16])
}

// idemTaskIDs derives the task IDs of a request under an idempotency key
// from the key and the request's fingerprint (a key used again for another
// request once its window is over names other tasks): "idem-", 32 hex
// digits of their hash and, from the second task of a request on, ":" and
// its index.
func idemTaskIDs(key, fingerprint string) func(i int) string {
	sum := sha256.Sum256([]byte("resendq idempotency\x00" + key + "\x00" + fingerprint))
	base := "idem-" + hex.EncodeToString(sum[:16])
	return func(i int) string {
		if i == 0 {
			return base
		}
		return base + ":" + strconv.Itoa(i)
	}
}
