package web_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// EnvChromium names the environment variable that gives the path of the
// Chromium binary of the browser test; when unset, "chromium" is looked up on
// PATH. `make test` installs Debian's chromium package and sets it.
const EnvChromium = "RESENDQ_CHROMIUM"

// outputDir is where the browser test saves its screenshots: testoutput/ at
// the repository root (ignored by git).
const outputDir = "../testoutput"

// browserTimeout bounds each wait of the browser test: generous, because a
// headless Chromium on a busy two-core machine can take seconds per page.
const browserTimeout = 60 * time.Second

// chromiumPath returns the Chromium to run, failing t when there is none:
// the browser test never skips.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(EnvChromium); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%q: %v", EnvChromium, p, err)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("chromium not found on PATH and %s is unset: run `make test`, which installs chromium, or set %s to its path", EnvChromium, EnvChromium)
	return ""
}

// newBrowser starts a headless Chromium for t and returns its context. Hosts
// other than 127.0.0.1 do not resolve, so the UI's web-font links fail at
// once instead of waiting on a network the test must not use.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(1400, 900),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Start the browser now, on a context without a deadline (one would end
	// the browser with it).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath(t), err)
	}
	return ctx
}

// step runs actions with a deadline, failing t with what as context.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v\npage text:\n%s", what, err, pageText(ctx))
	}
}

// pageText returns the visible text of the page, for failure messages.
func pageText(ctx context.Context) string {
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(tctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return "(unavailable: " + err.Error() + ")"
	}
	return s
}

// screenshot saves a PNG of the viewport as testoutput/name.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(outputDir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(outputDir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	t.Logf("screenshot: %s", abs)
}

// xpathText selects the element whose own text contains s.
func xpathText(tag, s string) string {
	return fmt.Sprintf(`//%s[contains(normalize-space(.), %q)]`, tag, s)
}

// TestBrowserShowsQueuesAndDeadLetters opens the asynq UI in headless
// Chromium, logging in the way a person would (HTTP Basic, the token as the
// password), on a worker that processed known tasks: the dashboard lists the
// queue, and the archived view of the queue shows the dead letter with the
// API's error code and the username.
func TestBrowserShowsQueuesAndDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.runWorker(t, "alice@example.com", "bob@example.com", "unknown.user@example.com")

	ctx := newBrowser(t)
	base, err := url.Parse(b.http.URL)
	if err != nil {
		t.Fatal(err)
	}
	base.User = url.UserPassword("ops", testToken)

	step(t, ctx, "open the dashboard and wait for the queue list",
		chromedp.Navigate(base.String()+"/monitoring/"),
		chromedp.WaitVisible(xpathText("a", "signup")),
		chromedp.WaitVisible(`//th[contains(., "Queue")]`),
	)
	screenshot(t, ctx, "asynqmon-queues.png")

	step(t, ctx, "open the archived tasks of the signup queue and wait for the dead letter",
		chromedp.Navigate(b.http.URL+"/monitoring/queues/signup?status=archived"),
		chromedp.WaitVisible(xpathText("td", "003-002")),
	)
	text := pageText(ctx)
	for _, want := range []string{
		"login api 404 003-002: User not found.", // the error, with its code
		"unknown.user@example.com",               // the payload, readable, username visible
		"Last Error",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("archived view lacks %q; it shows:\n%s", want, text)
		}
	}
	if strings.Contains(text, "alice@example.com") {
		t.Errorf("archived view shows a sent task:\n%s", text)
	}
	screenshot(t, ctx, "asynqmon-archived.png")
}
