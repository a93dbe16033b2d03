package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const validDockerfile = `FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -trimpath \
    -o /out/resendq ./cmd/resendq
FROM debian:12-slim
COPY --from=build /out/resendq /resendq
ENTRYPOINT ["/resendq"]
`

const validCompose = `name: resendq
services:
  redis:
    image: redis:7-alpine
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
  worker:
    build: .
    command: ["worker"]
    environment:
      RESENDQ_REDIS_URL: redis://redis:6379/0
      RESENDQ_API_BASE: ${RESENDQ_API_BASE:-https://example.invalid/api}
    depends_on:
      redis:
        condition: service_healthy
  fakeapi:
    profiles: ["fake"]
    build: .
    command: ["fakeapi", "--addr", "0.0.0.0:8089"]
`

// write lays out a compose file (and optionally a Dockerfile) in a temp dir
// and returns the compose file's path.
func write(t *testing.T, compose, dockerfile string) string {
	t.Helper()
	dir := t.TempDir()
	if dockerfile != "" {
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "docker-compose.yml")
	if err := os.WriteFile(path, []byte(compose), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidMinimal(t *testing.T) {
	n, err := check(context.Background(), write(t, validCompose, validDockerfile), nil)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if n != 3 {
		t.Fatalf("services = %d, want 3 (profiles must all be enabled)", n)
	}
}

func TestRepositoryComposeFile(t *testing.T) {
	n, err := check(context.Background(), "../../docker-compose.yml", withToken(nil))
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if n < 3 {
		t.Fatalf("services = %d, want at least 3", n)
	}
	// A compose user must set their own token.
	if _, err := load(context.Background(), "../../docker-compose.yml", nil); err == nil || !strings.Contains(err.Error(), tokenVar) {
		t.Errorf("the compose file loads without %s: %v", tokenVar, err)
	}
}

func TestPublishedWorkerNeedsARequiredToken(t *testing.T) {
	published := strings.Replace(validCompose, "    command: [\"worker\"]\n", "    command: [\"worker\"]\n    ports: [\"8080:8080\"]\n", 1)
	for _, token := range []string{"", "      RESENDQ_HTTP_TOKEN: ${RESENDQ_HTTP_TOKEN:-change-me}\n"} {
		compose := strings.Replace(published, "      RESENDQ_REDIS_URL: redis://redis:6379/0\n", "      RESENDQ_REDIS_URL: redis://redis:6379/0\n"+token, 1)
		if _, err := check(context.Background(), write(t, compose, validDockerfile), withToken(nil)); err == nil || !strings.Contains(err.Error(), tokenVar) {
			t.Errorf("a published worker with token %q passed: %v", token, err)
		}
	}
	required := strings.Replace(published, "      RESENDQ_REDIS_URL: redis://redis:6379/0\n", "      RESENDQ_REDIS_URL: redis://redis:6379/0\n      RESENDQ_HTTP_TOKEN: ${RESENDQ_HTTP_TOKEN:?set it}\n", 1)
	if _, err := check(context.Background(), write(t, required, validDockerfile), withToken(nil)); err != nil {
		t.Errorf("a published worker with a required token: %v", err)
	}
}

func TestInvalid(t *testing.T) {
	cases := []struct {
		name       string
		compose    string
		dockerfile string
		want       string // substring of the error
	}{
		{
			name:       "unknown top-level key",
			compose:    validCompose + "bogus: true\n",
			dockerfile: validDockerfile,
			want:       "bogus",
		},
		{
			name:       "depends_on unknown service",
			compose:    strings.Replace(validCompose, "      redis:\n        condition", "      nosuch:\n        condition", 1),
			dockerfile: validDockerfile,
			want:       "nosuch",
		},
		{
			name:       "depends_on wrong type",
			compose:    strings.Replace(validCompose, "    depends_on:\n      redis:\n        condition: service_healthy\n", "    depends_on: 42\n", 1),
			dockerfile: validDockerfile,
			want:       "depends_on",
		},
		{
			name:       "fakeapi not behind profile",
			compose:    strings.Replace(validCompose, "    profiles: [\"fake\"]\n", "", 1),
			dockerfile: validDockerfile,
			want:       "profile",
		},
		{
			name:       "worker without redis url",
			compose:    strings.Replace(validCompose, "      RESENDQ_REDIS_URL: redis://redis:6379/0\n", "", 1),
			dockerfile: validDockerfile,
			want:       "RESENDQ_REDIS_URL",
		},
		{
			name:       "missing service",
			compose:    strings.Replace(validCompose, "  fakeapi:\n    profiles: [\"fake\"]\n    build: .\n    command: [\"fakeapi\", \"--addr\", \"0.0.0.0:8089\"]\n", "", 1),
			dockerfile: validDockerfile,
			want:       "fakeapi",
		},
		{
			name:    "dockerfile missing",
			compose: validCompose,
			want:    "dockerfile",
		},
		{
			name:       "dockerfile builds something else",
			compose:    validCompose,
			dockerfile: "FROM scratch\nCOPY resendq /resendq\n",
			want:       "./cmd/resendq",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.compose == validCompose && tc.dockerfile == validDockerfile {
				t.Fatal("test case does not change anything")
			}
			_, err := check(context.Background(), write(t, tc.compose, tc.dockerfile), nil)
			if err == nil {
				t.Fatal("check passed, want an error")
			}
			t.Logf("error (as expected): %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}
