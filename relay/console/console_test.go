package console_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/queue/queuetest"
	"github.com/jetrelay/jetrelay/relay/admin"
	"github.com/jetrelay/jetrelay/relay/bounce"
	"github.com/jetrelay/jetrelay/relay/console"
	"github.com/jetrelay/jetrelay/relay/events"
	"github.com/jetrelay/jetrelay/relay/relaytest"
	"github.com/rs/zerolog"
)

const fakeID = "0000000000000000000000" // a valid queue id with no message

// TestAuthRequired: every route but the login form and its static files
// needs a session: pages redirect to the login form, streams and forms
// get 401; a made-up cookie is no session.
func TestAuthRequired(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pages := []string{"/console/", "/console/messages", "/console/messages?rcpt=a", "/console/messages/" + fakeID,
		"/console/live", "/console/queue", "/console/suppressions", "/console/nowhere"}
	posts := []string{"/console/logout", "/console/messages/" + fakeID + "/retry", "/console/queue/a.example/retry",
		"/console/suppressions/remove"}
	forged := e.client(t)
	u, _ := url.Parse(e.srv.URL + "/console/")
	forged.Jar.SetCookies(u, []*http.Cookie{{Name: "jetrelay_console", Value: strings.Repeat("A", 43)}})
	for _, c := range []*http.Client{e.client(t), forged} {
		for _, p := range pages {
			r := e.get(t, c, p)
			want := "/console/login?" + url.Values{"next": {p}}.Encode()
			if r.code != http.StatusSeeOther || r.header.Get("Location") != want {
				t.Errorf("GET %s without a session: %d %q", p, r.code, r.header.Get("Location"))
			}
		}
		if r := e.get(t, c, "/console/live/events"); r.code != http.StatusUnauthorized {
			t.Errorf("live events without a session: %d", r.code)
		}
		for _, p := range posts {
			if r := e.post(t, c, p, url.Values{"csrf": {"x"}, "addr": {"a@b.c"}}); r.code != http.StatusUnauthorized {
				t.Errorf("POST %s without a session: %d", p, r.code)
			}
		}
	}
	anon := e.client(t)
	for _, p := range []string{"/console/login", "/console/static/console.css", "/console/static/console.js"} {
		if r := e.get(t, anon, p); r.code != http.StatusOK {
			t.Errorf("GET %s: %d", p, r.code)
		}
	}
	c := e.login(t, viewer, viewerPass)
	for _, p := range pages[:7] {
		if p == "/console/messages/"+fakeID {
			continue // no such message: 404 below
		}
		if r := e.get(t, c, p); r.code != http.StatusOK {
			t.Errorf("GET %s with a session: %d\n%s", p, r.code, r.body)
		}
	}
	if r := e.get(t, c, "/console/messages/"+fakeID); r.code != http.StatusNotFound {
		t.Errorf("unknown message: %d", r.code)
	}
	// Logging out ends the session on the server, not only the cookie.
	tok := e.csrf(t, c)
	cookies := c.Jar.Cookies(u)
	if r := e.post(t, c, "/console/logout", url.Values{"csrf": {tok}}); r.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.code)
	}
	old := e.client(t)
	old.Jar.SetCookies(u, cookies)
	if r := e.get(t, old, "/console/queue"); r.code != http.StatusSeeOther {
		t.Errorf("the old cookie after logout: %d", r.code)
	}
}

// TestLogin: wrong passwords and unknown users are refused alike; the
// cookie is HttpOnly, SameSite=Strict and scoped to /console/; after ten
// failures the brake refuses even the right password.
func TestLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.client(t)
	for _, f := range []url.Values{{"name": {viewer}, "password": {"wrong"}}, {"name": {"nobody"}, "password": {"x"}},
		{"name": {viewer}}} {
		r := e.post(t, c, "/console/login", f)
		if r.code != http.StatusUnauthorized || !strings.Contains(r.body, "wrong name or password") ||
			r.header.Get("Set-Cookie") != "" {
			t.Errorf("login %v: %d %q", f, r.code, r.header.Get("Set-Cookie"))
		}
	}
	r := e.post(t, c, "/console/login", url.Values{"name": {operator}, "password": {operatorPass}})
	ck := r.header.Get("Set-Cookie")
	for _, w := range []string{"jetrelay_console=", "Path=/console/", "HttpOnly", "SameSite=Strict"} {
		if !strings.Contains(ck, w) {
			t.Errorf("cookie %q lacks %q", ck, w)
		}
	}
	if strings.Contains(ck, "Secure") {
		t.Errorf("cookie %q is Secure without TLS", ck)
	}
	// A login continues where the session was asked for, on this site only.
	for next, want := range map[string]string{"/console/messages/" + fakeID: "/console/messages/" + fakeID,
		"//evil.example/console/": "/console/", "https://evil.example/console/": "/console/",
		"/console/\\evil.example": "/console/", "": "/console/"} {
		if !strings.Contains(e.get(t, c, "/console/login?"+url.Values{"next": {next}}.Encode()).body,
			`name="next" value="`+want+`"`) {
			t.Errorf("login form for next %q does not carry %q", next, want)
		}
		r := e.post(t, e.client(t), "/console/login", url.Values{"name": {operator}, "password": {operatorPass},
			"next": {next}})
		if r.code != http.StatusSeeOther || r.header.Get("Location") != want {
			t.Errorf("login with next %q: %d %q", next, r.code, r.header.Get("Location"))
		}
	}
	for i := 0; i < 8; i++ { // 2 failures above for vic, 8 more
		e.post(t, e.client(t), "/console/login", url.Values{"name": {viewer}, "password": {"wrong"}})
	}
	r = e.post(t, e.client(t), "/console/login", url.Values{"name": {viewer}, "password": {viewerPass}})
	if r.code != http.StatusTooManyRequests || !strings.Contains(r.body, "too many failed logins") {
		t.Errorf("login after 10 failures: %d\n%s", r.code, r.body)
	}
}

// TestRolesAndCSRF: an action needs the operator role and the session's
// CSRF token; a missing or wrong token is refused (403) and changes
// nothing; a valid one retries through relay/ops, recorded as an event
// with the console user as actor.
func TestRolesAndCSRF(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	env := e.enqueue(t, "u@slow.example", "hello")
	e.deferOne(t, "try later")
	path := "/console/messages/" + env.ID + "/retry"
	vc := e.login(t, viewer, viewerPass)
	oc := e.login(t, operator, operatorPass)
	if m := csrfRe.FindStringSubmatch(e.get(t, vc, "/console/messages/"+env.ID).body); m != nil &&
		strings.Contains(e.get(t, vc, "/console/messages/"+env.ID).body, path) {
		t.Error("the viewer is offered the retry form")
	}
	if !strings.Contains(e.get(t, oc, "/console/messages/"+env.ID).body, `action="`+path+`"`) {
		t.Error("the operator is not offered the retry form")
	}
	for name, tc := range map[string]struct {
		c    *http.Client
		csrf string
	}{
		"viewer":       {vc, e.csrf(t, vc)},
		"missing":      {oc, ""},
		"wrong":        {oc, strings.Repeat("x", 43)},
		"other's csrf": {oc, e.csrf(t, vc)},
	} {
		if r := e.post(t, tc.c, path, url.Values{"csrf": {tc.csrf}}); r.code != http.StatusForbidden {
			t.Errorf("%s: %d", name, r.code)
		}
	}
	for _, origin := range []string{"https://attacker.example", "null"} {
		form := strings.NewReader(url.Values{"csrf": {e.csrf(t, oc)}}.Encode())
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, form)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		if resp, err := oc.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("POST from origin %s with a valid token: %v %v", origin, resp, err)
		} else {
			resp.Body.Close()
		}
	}
	items, _ := e.q.List(context.Background(), queue.ListOptions{ID: env.ID})
	if len(items) != 1 || items[0].State != queue.StateDeferred {
		t.Fatalf("refused actions changed the entry: %+v", items)
	}
	r := e.post(t, oc, path, url.Values{"csrf": {e.csrf(t, oc)}})
	if r.code != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/console/messages/"+env.ID+"?") {
		t.Fatalf("retry: %d %q\n%s", r.code, r.header.Get("Location"), r.body)
	}
	if p := e.get(t, oc, r.header.Get("Location")); !strings.Contains(p.body, "retry: 1 done, 0 skipped, 0 failed") {
		t.Errorf("the page after retry does not say what happened:\n%s", p.body)
	}
	relaytest.Eventually(t, "the retried entry is ready", func() bool {
		items, err := e.q.List(context.Background(), queue.ListOptions{ID: env.ID})
		return err == nil && len(items) == 1 && items[0].State == queue.StateReady
	})
	if got := e.events.Find(events.Retried, nil); len(got) != 1 || got[0].Actor != "console:"+operator ||
		got[0].QueueID != env.ID {
		t.Errorf("retried events %+v", got)
	}
}

// TestEscaping: hostile text from a message header and a remote reply is
// shown escaped on the Message page and the search results, and every
// page carries the CSP without inline script.
func TestEscaping(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	env := e.enqueue(t, "u@evil.example", `<script>alert("subject")</script>`)
	e.finish(env.ID, "u@evil.example", events.StatusFailed, 550, "5.1.1", `no such user <script>alert("reply")</script>`)
	c := e.login(t, viewer, viewerPass)
	e.indexed(t, c, "rcpt=evil.example", env.ID)
	for _, p := range []string{"/console/messages/" + env.ID, "/console/messages?rcpt=evil.example"} {
		r := e.get(t, c, p)
		if r.code != http.StatusOK {
			t.Fatalf("%s: %d", p, r.code)
		}
		if strings.Contains(r.body, "<script>alert") {
			t.Errorf("%s shows hostile text unescaped:\n%s", p, r.body)
		}
		if !strings.Contains(r.body, "&lt;script&gt;alert(&#34;reply&#34;)") {
			t.Errorf("%s does not show the reply escaped:\n%s", p, r.body)
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") ||
			!strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		if strings.Contains(r.body, "<script>") || strings.Contains(r.body, " style=") || strings.Contains(r.body, " on") &&
			strings.Contains(r.body, "onclick=") {
			t.Errorf("%s has inline script or style", p)
		}
		if len(r.body) > 100<<10 {
			t.Errorf("%s is %d bytes", p, len(r.body))
		}
	}
	if r := e.get(t, c, "/console/messages/"+env.ID); !strings.Contains(r.body, "&lt;script&gt;alert(&#34;subject&#34;)") {
		t.Errorf("the header is not shown escaped:\n%s", r.body)
	}
}

// TestDisabled: without a console (admin.console.enabled: false) the
// admin listener has no /console/ route at all; with one, it does.
func TestDisabled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	q := queuetest.RunJetStream(t)
	for _, tc := range []struct {
		name string
		con  admin.Console
		want int
	}{{"disabled", nil, http.StatusNotFound}, {"enabled", e.con, http.StatusSeeOther}} {
		s, err := admin.New(admin.Options{Metrics: admin.NewMetrics(), Queue: q, Console: tc.con,
			Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		h := s.Handler()
		for _, p := range []string{"/console/", "/console/login", "/console/messages", "/console/static/console.js"} {
			rec := newRecorder()
			h.ServeHTTP(rec, mustReq(t, p))
			want := tc.want
			if tc.con != nil && (p == "/console/login" || p == "/console/static/console.js") {
				want = http.StatusOK
			}
			if rec.code() != want {
				t.Errorf("%s %s: %d, want %d", tc.name, p, rec.code(), want)
			}
		}
	}
}

// TestSuppressions: the list is searchable; an operator removes an
// address, recorded as unsuppressed by console:<user>; a viewer cannot.
func TestSuppressions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for _, a := range []string{"gone@bounce.example", "other@else.example"} {
		if _, err := e.supp.Add(ctx, bounce.Suppression{Addr: a, Code: "5.1.1", Reason: "550 5.1.1 <b>no</b>"},
			"test"); err != nil {
			t.Fatal(err)
		}
	}
	vc := e.login(t, viewer, viewerPass)
	r := e.get(t, vc, "/console/suppressions?q=bounce.example")
	if !strings.Contains(r.body, "gone@bounce.example") || strings.Contains(r.body, "other@else.example") ||
		!strings.Contains(r.body, "&lt;b&gt;no") || strings.Contains(r.body, "/console/suppressions/remove") {
		t.Errorf("viewer's search:\n%s", r.body)
	}
	form := url.Values{"addr": {"gone@bounce.example"}, "csrf": {e.csrf(t, vc)}}
	if r := e.post(t, vc, "/console/suppressions/remove", form); r.code != http.StatusForbidden {
		t.Errorf("viewer unsuppress: %d", r.code)
	}
	oc := e.login(t, operator, operatorPass)
	form.Set("csrf", e.csrf(t, oc))
	if r := e.post(t, oc, "/console/suppressions/remove", form); r.code != http.StatusSeeOther {
		t.Fatalf("operator unsuppress: %d\n%s", r.code, r.body)
	}
	if _, ok, _ := e.supp.Suppressed(ctx, "gone@bounce.example"); ok {
		t.Error("still suppressed")
	}
	if got := e.events.Find(events.Unsuppressed, nil); len(got) != 1 || got[0].Actor != "console:"+operator {
		t.Errorf("unsuppressed events %+v", got)
	}
}

// TestLiveStream: the live stream sends events emitted after it opened,
// filtered by domain, and refuses streams over MaxStreams.
func TestLiveStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.login(t, viewer, viewerPass)
	ctx, cancel := context.WithTimeout(context.Background(), relaytest.Wait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/console/live/events?domain=live.example", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, ": stream open") {
		t.Fatalf("first line %q %v", l, err)
	}
	// A second stream fits (MaxStreams 2), a third does not.
	ctx2, cancel2 := context.WithCancel(ctx)
	req2, _ := http.NewRequestWithContext(ctx2, http.MethodGet, e.srv.URL+"/console/live/events", nil)
	resp2, err := c.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.get(t, c, "/console/live/events"); r.code != http.StatusServiceUnavailable {
		t.Errorf("third stream: %d", r.code)
	}
	cancel2()
	resp2.Body.Close()
	// The stream's consumer starts at "now" once it is set up: emit until
	// an event arrives (events before it are not shown, by design).
	got := make(chan string, 1)
	go func() {
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(l, "data: ") {
				got <- l
				return
			}
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		e.em.Emit(&events.Event{Event: events.Delivery, QueueID: fakeID, Rcpt: "x@other.example", Domain: "other.example",
			Status: events.StatusDelivered})
		e.em.Emit(&events.Event{Event: events.Delivery, QueueID: fakeID, Rcpt: "u@live.example", Domain: "live.example",
			Status: events.StatusDelivered, SMTPCode: 250, Reply: "<ok>"})
		select {
		case l := <-got:
			if !strings.Contains(l, `"rcpt":"u@live.example"`) || strings.Contains(l, "other.example") ||
				!strings.Contains(l, `\u003cok\u003e`) {
				t.Errorf("event line %q", l)
			}
			return
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no event on the live stream")
		}
	}
}

// TestOverview: the Overview draws the cluster-wide counts (relay/stats,
// aggregated from the events stream) as SVG without inline style.
func TestOverview(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.enqueue(t, "a@count.example", "one")
	e.settleOne(t, events.StatusDelivered, 250, "2.0.0", "ok")
	c := e.login(t, viewer, viewerPass)
	relaytest.Eventually(t, "the overview counts the delivery", func() bool {
		r := e.get(t, c, "/console/")
		return r.code == http.StatusOK && strings.Contains(r.body, "delivered <strong>1</strong>") &&
			strings.Contains(r.body, "accepted <strong>1</strong>")
	})
	r := e.get(t, c, "/console/")
	if strings.Count(r.body, "<polyline") != 8 || strings.Contains(r.body, "style=") || len(r.body) > 100<<10 {
		t.Errorf("overview:\n%s", r.body)
	}
}

// TestPageBudget: a message with a long header and hundreds of attempts
// with long replies still gives a Message page under 100 KB, showing its
// acceptance, its latest attempt and how many events were left out.
func TestPageBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var hdr strings.Builder
	for i := range 100 {
		fmt.Fprintf(&hdr, "X-Long-%d: %s\r\n", i, strings.Repeat("v", 900))
	}
	env := e.enqueue(t, "u@budget.example", "budget\r\n"+strings.TrimSuffix(hdr.String(), "\r\n"))
	const attempts = 200
	for i := 1; i <= attempts; i++ {
		e.em.Emit(&events.Event{Event: events.Delivery, QueueID: env.ID, Rcpt: "u@budget.example",
			Domain: "budget.example", Status: events.StatusDeferred, SMTPCode: 451, Attempt: i,
			Reply: strings.Repeat("r", 4000)})
	}
	c := e.login(t, viewer, viewerPass)
	relaytest.Eventually(t, "every attempt stored", func() bool {
		return strings.Contains(e.get(t, c, "/console/messages/"+env.ID).body, fmt.Sprintf("attempt %d ", attempts))
	})
	r := e.get(t, c, "/console/messages/"+env.ID)
	if len(r.body) > 100<<10 {
		t.Errorf("message page is %d bytes", len(r.body))
	}
	for _, w := range []string{">accepted<", "141 earlier events are not shown", "attempt 200 ", "X-Long-0"} {
		if !strings.Contains(r.body, w) {
			t.Errorf("message page lacks %q", w)
		}
	}
	if strings.Contains(r.body, "attempt 141 ") || !strings.Contains(r.body, "attempt 142 ") {
		t.Error("the page does not show exactly the latest 59 attempts")
	}
}

// TestQueuePage: counts by domain and state, and the failing and parked
// destinations with their last reply and next try; an operator holds a
// domain's entries from the page.
func TestQueuePage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.enqueue(t, "a@defer.example", "one")
	e.deferOne(t, "greylisted <try> later")
	e.enqueue(t, "b@parked.example", "two")
	e.parkOne(t, "connection refused")
	e.enqueue(t, "c@ready.example", "three")
	oc := e.login(t, operator, operatorPass)
	r := e.get(t, oc, "/console/queue")
	for _, w := range []string{"defer.example", "parked.example", "ready.example",
		"451 4.7.1 greylisted &lt;try&gt; later (mx.defer.example)", "retry 20", // its next attempt
		"421 4.4.2 connection refused (mx.parked.example)", "wake-up (probe) 20"} {
		if !strings.Contains(r.body, w) {
			t.Errorf("queue page lacks %q:\n%s", w, r.body)
		}
	}
	form := url.Values{"csrf": {e.csrf(t, oc)}}
	if r := e.post(t, oc, "/console/queue/ready.example/hold", form); r.code != http.StatusSeeOther {
		t.Fatalf("hold domain: %d\n%s", r.code, r.body)
	}
	relaytest.Eventually(t, "ready.example held", func() bool {
		items, err := e.q.List(context.Background(), queue.ListOptions{Domain: "ready.example"})
		return err == nil && len(items) == 1 && items[0].State == queue.StateHeld
	})
	if r := e.post(t, oc, "/console/queue/no domain/hold", form); r.code != http.StatusNotFound {
		t.Errorf("hold of a bad domain: %d", r.code)
	}
}

// TestPrepareUsers: a reload's user list takes effect at once: a new user
// logs in, a removed user's session is refused, a role change applies to
// existing sessions; a bad list is refused and changes nothing.
func TestPrepareUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	vc := e.login(t, viewer, viewerPass)
	oc := e.login(t, operator, operatorPass)
	plain := []console.User{{Name: "x", PasswordHash: "plain", Role: console.RoleViewer}}
	if _, err := e.con.PrepareUsers(plain); err == nil {
		t.Error("a plain-text password was accepted")
	}
	if _, err := e.con.PrepareUsers([]console.User{{Name: "x", PasswordHash: hash(t, "p"), Role: "admin"}}); err == nil {
		t.Error("an unknown role was accepted")
	}
	apply, err := e.con.PrepareUsers([]console.User{
		{Name: operator, PasswordHash: hash(t, operatorPass), Role: console.RoleViewer},
		{Name: "new", PasswordHash: hash(t, "new-pass"), Role: console.RoleViewer}})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.get(t, vc, "/console/queue"); r.code != http.StatusOK {
		t.Errorf("before apply, the viewer's session: %d", r.code)
	}
	apply()
	if r := e.get(t, vc, "/console/queue"); r.code != http.StatusSeeOther {
		t.Errorf("a removed user's session: %d", r.code)
	}
	r := e.get(t, oc, "/console/queue")
	if strings.Contains(r.body, "(operator)") || !strings.Contains(r.body, "(viewer)") {
		t.Error("the role change did not reach the existing session")
	}
	e.login(t, "new", "new-pass")
}

// TestDeleteActions: an operator deletes one message with a DSN to its
// sender and one without; both are recorded as deleted by the console
// user, and only the first queues a DSN.
func TestDeleteActions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	withDSN := e.enqueue(t, "a@del.example", "one")
	e.deferOne(t, "later")
	noDSN := e.enqueue(t, "b@del.example", "two")
	e.deferOne(t, "later")
	oc := e.login(t, operator, operatorPass)
	tok := e.csrf(t, oc)
	for id, action := range map[string]string{withDSN.ID: "delete", noDSN.ID: "delete-nodsn"} {
		r := e.post(t, oc, "/console/messages/"+id+"/"+action, url.Values{"csrf": {tok}})
		if r.code != http.StatusSeeOther {
			t.Fatalf("%s %s: %d\n%s", action, id, r.code, r.body)
		}
		if items, err := e.q.List(ctx, queue.ListOptions{ID: id}); err != nil || len(items) != 0 {
			t.Errorf("%s left %v %v", action, items, err)
		}
	}
	dels := e.events.Find(events.Deleted, func(ev events.Event) bool { return ev.Actor == "console:"+operator })
	if len(dels) != 2 {
		t.Errorf("deleted events %+v", dels)
	}
	relaytest.Eventually(t, "one DSN queued", func() bool {
		items, err := e.q.List(ctx, queue.ListOptions{Domain: "sender.test"})
		return err == nil && len(items) == 1 && items[0].Env.IsDSN
	})
}

// TestSearchForm: the Messages form's fields reach the index (status,
// meta, queue id, time range) and bad values are explained, not searched.
func TestSearchForm(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.enqueue(t, "a@ok.example", "one")
	okID := e.settleOne(t, events.StatusDelivered, 250, "2.0.0", "ok")
	e.enqueue(t, "b@bad.example", "two")
	badID := e.settleOne(t, events.StatusFailed, 550, "5.1.1", "no such user")
	c := e.login(t, viewer, viewerPass)
	e.indexed(t, c, "", okID)
	e.indexed(t, c, "", badID)
	now := time.Now().UTC()
	for q, want := range map[string][]string{
		"status=failed":    {badID},
		"status=delivered": {okID},
		"meta=order%3D42":  {okID, badID},
		"meta=order%3D43":  nil,
		"id=" + okID:       {okID},
		"rcpt=bad.example": {badID},
		"since=" + now.Add(time.Hour).Format("2006-01-02T15:04"): nil,
		"until=" + now.Add(time.Hour).Format("2006-01-02T15:04"): {okID, badID},
	} {
		r := e.get(t, c, "/console/messages?"+q)
		for _, id := range []string{okID, badID} {
			if strings.Contains(r.body, id) != slices.Contains(want, id) {
				t.Errorf("%s: shows %s %v, want %v", q, id, strings.Contains(r.body, id), want)
			}
		}
	}
	for q, w := range map[string]string{"meta=order": "meta takes key=value pairs", "since=yesterday": "times are",
		"status=lost": "unknown status"} {
		if r := e.get(t, c, "/console/messages?"+q); !strings.Contains(r.body, w) || strings.Contains(r.body, okID) {
			t.Errorf("%s: no explanation %q:\n%s", q, w, r.body)
		}
	}
}
