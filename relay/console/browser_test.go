package console_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
)

// Browser test switches.
const (
	// requireBrowserEnv set to 1 turns a missing Chromium into a failure
	// (scripts/test installs Debian's chromium and sets it).
	requireBrowserEnv = "JETRELAY_REQUIRE_BROWSER"
	// screenshotDirEnv, when set, receives the Message page screenshot
	// as console-message.png (the README's picture, docs/).
	screenshotDirEnv = "JETRELAY_SCREENSHOT_DIR"
	// liveWithin is how soon the Live page must show a new event (issue 19).
	liveWithin = 10 * time.Second
)

// chromium finds a Chromium or Chrome binary, or skips the test (fails
// it when JETRELAY_REQUIRE_BROWSER=1).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv(requireBrowserEnv) == "1" {
		t.Fatal("no chromium binary in PATH and " + requireBrowserEnv + "=1: install it (apt-get install chromium)")
	}
	t.Skip("no chromium binary in PATH: the browser test needs headless Chromium (apt-get install chromium; " +
		"scripts/test installs it and sets " + requireBrowserEnv + "=1)")
	return ""
}

// browser starts headless Chromium (no sandbox: the tests run as root)
// that resolves no name and reaches nothing but the console on loopback.
func browser(t *testing.T, exe string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 1000),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"),
		// Anything but the console goes to a closed loopback port.
		chromedp.Flag("proxy-server", "http://127.0.0.1:9"), chromedp.Flag("proxy-bypass-list", "127.0.0.1"),
		chromedp.Flag("disable-component-update", true), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// TestBrowser drives the console in headless Chromium: login, a search
// finding a delivered and a bounced message, the bounced message's
// history, the Live page receiving a new event, and an operator retry.
// Screenshots of each step go to the test's temp dir.
func TestBrowser(t *testing.T) {
	exe := chromium(t)
	e := newEnv(t)
	e.enqueue(t, "alice@delivered.example", "Your order 42")
	okID := e.settleOne(t, events.StatusDelivered, 250, "2.0.0", "OK queued as 7F3A2")
	e.enqueue(t, "bob@bounced.example", "Your order 43")
	badID := e.settleOne(t, events.StatusFailed, 550, "5.1.1", "<bob@bounced.example>: Recipient address rejected: "+
		"User unknown in virtual mailbox table")
	slow := e.enqueue(t, "carol@slow.example", "Your order 44")
	e.deferOne(t, "Greylisted, please try again in 300 seconds")
	hc := e.login(t, viewer, viewerPass)
	e.indexed(t, hc, "from=app@sender.test", badID)
	e.indexed(t, hc, "from=app@sender.test", okID)

	shots := t.TempDir()
	ctx := browser(t, exe)
	step := func(name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, relaytest.Wait)
		defer cancel()
		err := chromedp.Do(sctx, actions...)
		var png []byte
		if err == nil {
			png, err = chromedp.Run(sctx, chromedp.FullScreenshot(100))
		}
		if err != nil {
			dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
			html, herr := chromedp.Run(dctx, chromedp.OuterHTML(chromedp.CSS("html")))
			dcancel()
			t.Fatalf("%s: %v\npage now (%v):\n%s", name, err, herr, html)
		}
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	login := func(name, pass string) {
		step("login-"+name,
			chromedp.Navigate(e.srv.URL+"/console/login"),
			chromedp.SendKeys(chromedp.CSS(`input[name=name]`), name),
			chromedp.SendKeys(chromedp.CSS(`input[name=password]`), pass),
			chromedp.Click(chromedp.CSS(`form.login button`)),
			chromedp.WaitVisible(chromedp.CSS(`nav a.active`)))
	}
	login(viewer, viewerPass)

	step("search",
		chromedp.Navigate(e.srv.URL+"/console/messages"),
		chromedp.SendKeys(chromedp.CSS(`input[name=from]`), "app@sender.test"),
		chromedp.Click(chromedp.CSS(`form.search button`)),
		chromedp.WaitVisible(chromedp.CSS(`table.results`)))
	results := text(t, ctx, `table.results tbody`)
	for _, w := range []string{okID, "delivered", badID, "failed", "alice@delivered.example", "bob@bounced.example"} {
		if !strings.Contains(results, w) {
			t.Errorf("search results lack %q:\n%s", w, results)
		}
	}

	step("message",
		chromedp.Click(chromedp.CSS(`a[href="/console/messages/`+badID+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table.history`)))
	history := text(t, ctx, `table.history tbody`)
	for _, w := range []string{"accepted", "delivery failed", "550 5.1.1", "User unknown", "TLS1.3", "dsn", "DSN "} {
		if !strings.Contains(history, w) {
			t.Errorf("history lacks %q:\n%s", w, history)
		}
	}
	if dir := os.Getenv(screenshotDirEnv); dir != "" {
		b, err := os.ReadFile(filepath.Join(shots, "message.png"))
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "console-message.png"), b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	liveStep(t, ctx, e, step)

	step("logout", chromedp.Click(chromedp.CSS(`form.logout button`)),
		chromedp.WaitVisible(chromedp.CSS(`form.login`)))
	login(operator, operatorPass)
	step("retry",
		chromedp.Navigate(e.srv.URL+"/console/messages/"+slow.ID),
		chromedp.Click(chromedp.CSS(`button[value=retry]`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)))
	flash := text(t, ctx, `p.flash`)
	if !strings.Contains(flash, "retry: 1 done") {
		t.Errorf("after retry the page says %q", flash)
	}
	relaytest.Eventually(t, "the retried entry is ready", func() bool {
		items, err := e.q.List(context.Background(), queue.ListOptions{ID: slow.ID})
		return err == nil && len(items) == 1 && items[0].State == queue.StateReady
	})
	if got := e.events.Find(events.Retried, nil); len(got) != 1 || got[0].Actor != "console:"+operator {
		t.Errorf("retried events %+v", got)
	}
	t.Logf("screenshots in %s", shots)
}

// liveStep opens the Live page and emits events until one shows up, which
// must happen within liveWithin of the page following the stream.
func liveStep(t *testing.T, ctx context.Context, e *env, step func(string, ...chromedp.Action[chromedp.Void])) {
	t.Helper()
	step("live-open",
		chromedp.Navigate(e.srv.URL+"/console/live"),
		chromedp.WaitVisible(chromedp.CSS(`#live-pause`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("live-state").textContent === "Following."`))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			e.em.Emit(&events.Event{Event: events.Delivery, QueueID: queue.NewID(), Rcpt: "dave@live.example",
				Domain: "live.example", MX: "mx.live.example", Status: events.StatusDelivered, SMTPCode: 250,
				SMTPEnh: "2.0.0", Reply: "OK <script>x</script>"})
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	step("live-event",
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("tr.live-row").length > 0`,
			chromedp.WithPollingTimeout(liveWithin)))
	row := text(t, ctx, `tr.live-row`)
	if !strings.Contains(row, "dave@live.example") || !strings.Contains(row, "OK <script>x</script>") {
		t.Errorf("live row %q", row)
	}
}

// text returns the text of the first element sel selects.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, relaytest.Wait)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return v
}
