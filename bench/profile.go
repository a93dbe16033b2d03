package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// profileTop is the head of one `go tool pprof -top` listing.
type profileTop struct {
	side, kind string // kind: "cpu" or "alloc"
	tasks      int
	text       string
}

// profileLines is how much of a listing goes into docs/BENCHMARKS.md; the
// files in the profiles folder keep 40 entries.
const profileLines = 22

// profile drains spec once per worker with CPU and allocation profiles on,
// and writes `go tool pprof -top` of each into dir as <side>-cpu.txt and
// <side>-alloc.txt (allocations by bytes, alloc_space).
func (e *env) profile(ctx context.Context, spec drainSpec, dir string) ([]profileTop, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var tops []profileTop
	for _, side := range []string{ours, naive} {
		prof := profiles{
			cpu: filepath.Join(e.tmp, side+".cpu.prof"),
			mem: filepath.Join(e.tmp, side+".mem.prof"),
		}
		if _, err := e.drain(ctx, side, spec, prof); err != nil {
			return nil, err
		}
		bin := map[string]string{ours: e.ours, naive: e.naive}[side]
		for _, k := range []struct{ kind, file, index string }{
			{"cpu", prof.cpu, ""}, {"alloc", prof.mem, "-sample_index=alloc_space"},
		} {
			args := []string{"tool", "pprof", "-top", "-nodecount=40"}
			if k.index != "" {
				args = append(args, k.index)
			}
			out, err := exec.CommandContext(ctx, "go", append(args, bin, k.file)...).Output()
			if err != nil {
				return nil, fmt.Errorf("go tool pprof %s: %w", k.file, err)
			}
			text := firstLines(string(out), 46)
			name := filepath.Join(dir, side+"-"+k.kind+".txt")
			head := fmt.Sprintf("# %s, one drain of %s: go tool pprof -top %s\n", side, spec, k.index)
			if err := os.WriteFile(name, []byte(head+text+"\n"), 0o644); err != nil {
				return nil, err
			}
			tops = append(tops, profileTop{side: side, kind: k.kind, tasks: spec.tasks, text: firstLines(text, profileLines)})
			fmt.Printf("wrote %s\n", name)
		}
	}
	return tops, nil
}

// firstLines keeps the first n lines of s, without pprof's "File:" and
// "Build ID:" lines, which change with every build.
func firstLines(s string, n int) string {
	var keep []string
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if strings.HasPrefix(line, "File: ") || strings.HasPrefix(line, "Build ID: ") {
			continue
		}
		keep = append(keep, line)
		if len(keep) == n {
			break
		}
	}
	return strings.Join(keep, "\n")
}
