// Package rkey holds what every package that owns a Redis key layout needs to
// know about Redis Cluster. Each package keeps its own layout; this one only
// answers whether the client is a cluster client and builds hash tags.
//
// On Redis Cluster a command or script may touch several keys only when they
// hash to one slot. A key's slot is the CRC16 of its hash tag, the part
// between the first "{" and the next "}", or of the whole key when it has no
// tag. Layouts that must work on a cluster therefore tag every key a script
// touches with the same tag, and pass every key in KEYS.
package rkey

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Unwrapper is a client that wraps another, e.g. one that intercepts some
// commands; IsCluster looks through it.
type Unwrapper interface {
	Unwrap() redis.UniversalClient
}

// IsCluster reports whether rdb (or the client it wraps) is a Redis Cluster
// client.
func IsCluster(rdb redis.UniversalClient) bool {
	for rdb != nil {
		if _, ok := rdb.(*redis.ClusterClient); ok {
			return true
		}
		u, ok := rdb.(Unwrapper)
		if !ok {
			return false
		}
		rdb = u.Unwrap()
	}
	return false
}

// Tag returns s as a hash tag: "{" + s + "}". Braces inside s would end the
// tag early, so they become "(" and ")".
func Tag(s string) string {
	return "{" + strings.NewReplacer("{", "(", "}", ")").Replace(s) + "}"
}

// AsynqTask is the key of a task's message in asynq's layout
// (asynq:{queue}:t:ID, asynq v0.26's base.TaskKey): it exists while the
// task waits, runs, waits for a retry or is archived, and lies in its
// queue's slot.
func AsynqTask(queue, taskID string) string {
	return "asynq:{" + queue + "}:t:" + taskID
}

// Slot returns the cluster slot of key (0-16383), as Redis computes it.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % 16384)
}

// crc16 is CRC-16/XMODEM, the checksum Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// RunScripts runs script n times, the i-th with the keys and arguments
// call(i) gives, all in one pipeline (on a cluster, one per master, sent in
// parallel), and returns the replies in order. A run that finds the script
// not loaded on its node is made again with Run, which loads it. A single
// run is a plain Run.
func RunScripts(ctx context.Context, rdb redis.UniversalClient, script *redis.Script, n int, call func(i int) ([]string, []any)) []*redis.Cmd {
	cmds := make([]*redis.Cmd, n)
	if n == 1 {
		keys, args := call(0)
		cmds[0] = script.Run(ctx, rdb, keys, args...)
		return cmds
	}
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range n {
			keys, args := call(i)
			cmds[i] = script.EvalSha(ctx, p, keys, args...)
		}
		return nil
	})
	for i, c := range cmds {
		if err := c.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			keys, args := call(i)
			cmds[i] = script.Run(ctx, rdb, keys, args...)
		}
	}
	return cmds
}
