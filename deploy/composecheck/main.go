// Command composecheck validates the repository's docker-compose.yml without
// a Docker engine: it loads the file with the compose-spec loader (schema
// validation, interpolation from the environment, every profile enabled) and
// checks the things resendq relies on.
//
//	go run . ../../docker-compose.yml
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

func main() {
	path := "../../docker-compose.yml"
	switch len(os.Args) {
	case 1:
	case 2:
		path = os.Args[1]
	default:
		fmt.Fprintln(os.Stderr, "usage: composecheck [docker-compose.yml]")
		os.Exit(2)
	}
	n, err := check(context.Background(), path, withToken(os.Environ()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(path), err)
		os.Exit(1)
	}
	fmt.Printf("%s: ok (%d services)\n", filepath.Base(path), n)
}

// tokenVar is the variable a compose user must set: the token of the
// worker's published HTTP surface.
const tokenVar = "RESENDQ_HTTP_TOKEN"

// withToken is env with a stand-in value of tokenVar when it has none, as a
// user who set their own would run the file.
func withToken(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, tokenVar+"=") {
			return env
		}
	}
	return append(env, tokenVar+"=composecheck-stand-in")
}

// check loads the compose file at path, interpolating from env, and returns
// the number of services (all profiles enabled) or the first problem found.
// A file that publishes the worker's HTTP port must also refuse to load
// without tokenVar, so that nobody runs it with a guessable token.
func check(ctx context.Context, path string, env []string) (int, error) {
	n, err := load(ctx, path, env)
	if err != nil || !publishesWorker(ctx, path, env) {
		return n, err
	}
	var without []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, tokenVar+"=") {
			without = append(without, kv)
		}
	}
	if _, err := load(ctx, path, without); err == nil || !strings.Contains(err.Error(), tokenVar) {
		return 0, fmt.Errorf("service \"worker\" publishes its HTTP port, so it must require %s (${%s:?...}), not default it (loading without it: %v)", tokenVar, tokenVar, err)
	}
	return n, nil
}

// publishesWorker reports whether the worker service publishes a port.
func publishesWorker(ctx context.Context, path string, env []string) bool {
	p, err := project(ctx, path, env)
	if err != nil {
		return false
	}
	w, ok := p.AllServices()["worker"]
	return ok && len(w.Ports) > 0
}

// load loads the compose file and checks resendq's expectations.
func load(ctx context.Context, path string, env []string) (int, error) {
	p, err := project(ctx, path, env)
	if err != nil {
		return 0, err
	}
	if errs := expectations(p); len(errs) > 0 {
		return 0, errors.Join(errs...)
	}
	return len(p.Services), nil
}

// project loads the compose file at path with every profile enabled.
func project(ctx context.Context, path string, env []string) (*types.Project, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, err
	}
	opts, err := cli.NewProjectOptions([]string{abs},
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithEnv(env),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
		cli.WithProfiles([]string{"*"}),
	)
	if err != nil {
		return nil, fmt.Errorf("compose options: %w", err)
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("invalid compose file: %w", err)
	}
	return p, nil
}

// expectations are resendq's own requirements on top of the compose spec.
func expectations(p *types.Project) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	all := p.AllServices()
	for _, name := range []string{"redis", "worker", "fakeapi"} {
		if _, ok := all[name]; !ok {
			fail("service %q is missing (have %s)", name, strings.Join(sortedKeys(all), ", "))
		}
	}

	if fake, ok := all["fakeapi"]; ok && !contains(fake.Profiles, "fake") {
		fail("service \"fakeapi\" must be under profile \"fake\" (profiles: %v)", fake.Profiles)
	}

	if worker, ok := all["worker"]; ok {
		if _, ok := worker.DependsOn["redis"]; !ok {
			fail("service \"worker\" must depend on \"redis\"")
		}
		if v, ok := worker.Environment["RESENDQ_REDIS_URL"]; !ok || v == nil || *v == "" {
			fail("service \"worker\" must set RESENDQ_REDIS_URL")
		}
		if len(worker.Profiles) > 0 {
			fail("service \"worker\" must not be behind a profile (profiles: %v)", worker.Profiles)
		}
	}

	// Every service we build must build resendq from a Dockerfile that exists.
	for _, name := range sortedKeys(all) {
		svc := all[name]
		if svc.Build == nil {
			continue
		}
		if err := checkBuild(svc.Build); err != nil {
			fail("service %q build: %v", name, err)
		}
	}
	if w, ok := all["worker"]; ok && w.Build == nil {
		fail("service \"worker\" must have a build section")
	}
	return errs
}

var (
	fromLine    = regexp.MustCompile(`(?i)^\s*FROM\s+\S+`)
	buildsMain  = regexp.MustCompile(`\bgo\s+build\b.*\./cmd/resendq\b`)
	continuedLn = regexp.MustCompile(`\\\s*$`)
)

func checkBuild(b *types.BuildConfig) error {
	if b.DockerfileInline != "" {
		return errors.New("inline Dockerfiles are not expected")
	}
	ctxDir := b.Context
	if st, err := os.Stat(ctxDir); err != nil || !st.IsDir() {
		return fmt.Errorf("build context %q is not a directory", ctxDir)
	}
	dockerfile := b.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	if !filepath.IsAbs(dockerfile) {
		dockerfile = filepath.Join(ctxDir, dockerfile)
	}
	f, err := os.Open(dockerfile)
	if err != nil {
		return fmt.Errorf("dockerfile: %w", err)
	}
	defer f.Close()

	var hasFrom, hasBuild bool
	var logical strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if continuedLn.MatchString(line) {
			logical.WriteString(continuedLn.ReplaceAllString(line, " "))
			continue
		}
		logical.WriteString(line)
		stmt := logical.String()
		logical.Reset()
		if fromLine.MatchString(stmt) {
			hasFrom = true
		}
		if buildsMain.MatchString(stmt) {
			hasBuild = true
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("dockerfile %s: %w", dockerfile, err)
	}
	if !hasFrom {
		return fmt.Errorf("dockerfile %s has no FROM instruction", dockerfile)
	}
	if !hasBuild {
		return fmt.Errorf("dockerfile %s does not `go build ... ./cmd/resendq`", dockerfile)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func sortedKeys(m types.Services) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
