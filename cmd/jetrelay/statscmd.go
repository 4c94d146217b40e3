package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jetrelay/jetrelay/relay/guard"
	"github.com/jetrelay/jetrelay/relay/safetext"
	"github.com/jetrelay/jetrelay/relay/stats"
)

const statsAbout = `Prints what became of the mail since --since (default 24h, rounded down to
the hour), counted across every node: per user, then per user and recipient
domain, the recipients accepted, delivered, deferred (attempts), hard-bounced
(permanent failures and asynchronous bounces), complained about (ARF abuse
reports), refused as suppressed at RCPT, and the bounce rate (bounced /
(delivered + bounced)). Users paused by the bounce-rate guard are marked with
the reason (jetrelay user resume NAME lifts it).

--json prints one object: {"since", "until", "users": [{"user", "accepted",
"delivered", "deferred", "bounced", "complaints", "suppressed", "bounce_rate",
"complaint_rate", "paused", "reason"}], "domains": [{"user", "domain", ...the
same counts and rates}]}; rates are fractions (0.05 = 5%).`

// statsTimeout bounds the command's talk with NATS.
const statsTimeout = 30 * time.Second

// statsMaxSince: the counts are kept 8 days.
const statsMaxSince = 8 * 24 * time.Hour

// statsRow is one line of `stats --json`.
type statsRow struct {
	User          string  `json:"user"`
	Domain        string  `json:"domain,omitempty"`
	Accepted      int64   `json:"accepted"`
	Delivered     int64   `json:"delivered"`
	Deferred      int64   `json:"deferred"`
	Bounced       int64   `json:"bounced"`
	Complaints    int64   `json:"complaints"`
	Suppressed    int64   `json:"suppressed"`
	BounceRate    float64 `json:"bounce_rate"`
	ComplaintRate float64 `json:"complaint_rate"`
	Paused        bool    `json:"paused,omitempty"`
	Reason        string  `json:"reason,omitempty"`
}

// statsReport is `stats --json`.
type statsReport struct {
	Since   time.Time  `json:"since"`
	Until   time.Time  `json:"until"`
	Users   []statsRow `json:"users"`
	Domains []statsRow `json:"domains"`
}

// addStatsNATSFlags is addNATSFlags with the NATS user as --nats-user:
// --user is the submission user here.
func addStatsNATSFlags(fs *flag.FlagSet) *natsFlags {
	f := &natsFlags{}
	fs.StringVar(&f.config, "config", "", "config file (the one serve uses): NATS is nats.url, or the embedded server's\n"+
		"nats.listen with the password in data_dir/nats.password (default: the built-in default)")
	fs.StringVar(&f.url, "nats", "", "NATS server URL(s), overriding the config")
	fs.StringVar(&f.user, "nats-user", "", "NATS user (with --password-file)")
	fs.StringVar(&f.passwordFile, "password-file", "", "file holding the NATS password")
	fs.StringVar(&f.creds, "creds", "", "NATS credentials file (JWT + nkey)")
	return f
}

func runStats(args []string, sio stdio) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return statsMain(ctx, args, sio)
}

// statsMain is `stats` with the caller's context.
func statsMain(ctx context.Context, args []string, sio stdio) int {
	fs := newFlags("stats", "stats [--user U] [--domain D] [--since 24h] [--json] [flags]", statsAbout, sio)
	user := fs.String("user", "", "only this submission user")
	domain := fs.String("domain", "", "only this recipient domain")
	since := fs.Duration("since", 24*time.Hour, "how far back (at most 192h)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	nf := addStatsNATSFlags(fs)
	if rc, ok := parseFlags(fs, args); !ok {
		return rc
	}
	if fs.NArg() > 0 || *since <= 0 || *since > statsMaxSince {
		fmt.Fprintln(sio.err, "jetrelay stats: usage: jetrelay stats [--user U] [--domain D] [--since DURATION up to 192h] [--json]")
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	rep, err := loadStats(ctx, nf, stats.Query{User: *user, Domain: *domain, Since: time.Now().Add(-*since)})
	if err != nil {
		_ = tprintf(sio.err, "jetrelay stats: %v\n", err)
		return 1
	}
	if *asJSON {
		raw, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			_ = tprintf(sio.err, "jetrelay stats: %v\n", err)
			return 1
		}
		_, _ = sio.out.Write(safetext.JSON(append(raw, '\n')))
		return 0
	}
	printStats(sio.out, rep)
	return 0
}

// loadStats reads q's rows and the guard's states.
func loadStats(ctx context.Context, nf *natsFlags, q stats.Query) (*statsReport, error) {
	conn, err := connectNATS(ctx, nf, "stats")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	st, err := stats.Attach(ctx, conn.JetStream())
	if errors.Is(err, stats.ErrNoStats) {
		st = nil
	} else if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	rep := &statsReport{Since: q.Since.UTC().Truncate(time.Hour), Until: now, Users: []statsRow{}, Domains: []statsRow{}}
	var rows []stats.Row
	if st != nil {
		if rows, err = st.Rows(ctx, q); err != nil {
			return nil, err
		}
	}
	states, err := guard.States(ctx, conn.JetStream())
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, r := range rows {
		sr := toStatsRow(r)
		if r.Domain != "" {
			rep.Domains = append(rep.Domains, sr)
			continue
		}
		seen[r.User] = true
		sr.Paused, sr.Reason = states[r.User].Paused, states[r.User].Reason
		rep.Users = append(rep.Users, sr)
	}
	for u, s := range states { // paused users without counts in the span
		if s.Paused && !seen[u] && (q.User == "" || q.User == u) && q.Domain == "" {
			rep.Users = append(rep.Users, statsRow{User: u, Paused: true, Reason: s.Reason})
		}
	}
	sort.SliceStable(rep.Users, func(i, j int) bool { return rep.Users[i].User < rep.Users[j].User })
	return rep, nil
}

func toStatsRow(r stats.Row) statsRow {
	return statsRow{User: r.User, Domain: r.Domain, Accepted: r.Accepted, Delivered: r.Delivered,
		Deferred: r.Deferred, Bounced: r.Bounced, Complaints: r.Complaints, Suppressed: r.Suppressed,
		BounceRate: r.BounceRate(), ComplaintRate: r.ComplaintRate()}
}

// printStats writes the two tables.
func printStats(w io.Writer, rep *statsReport) {
	_ = tprintf(w, "since %s (whole hours), counted in recipients\n\n", rep.Since.Format(time.RFC3339))
	if len(rep.Users) == 0 {
		fmt.Fprintln(w, "nothing counted")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tACCEPTED\tDELIVERED\tDEFERRED\tBOUNCED\tCOMPLAINTS\tSUPPRESSED\tBOUNCE RATE\tSTATE")
	for _, r := range rep.Users {
		state := "ok"
		if r.Paused {
			state = "paused: " + r.Reason
		}
		_ = tprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", userName(r.User), r.Accepted, r.Delivered,
			r.Deferred, r.Bounced, r.Complaints, r.Suppressed, percent(r.BounceRate), state)
	}
	_ = tw.Flush()
	if len(rep.Domains) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tDOMAIN\tACCEPTED\tDELIVERED\tDEFERRED\tBOUNCED\tCOMPLAINTS\tSUPPRESSED\tBOUNCE RATE")
	for _, r := range rep.Domains {
		_ = tprintf(tw, "%s\t%s\t-\t%d\t%d\t%d\t%d\t%d\t%s\n", userName(r.User), r.Domain, r.Delivered,
			r.Deferred, r.Bounced, r.Complaints, r.Suppressed, percent(r.BounceRate))
	}
	_ = tw.Flush()
}

// userName shows events without a user as "-".
func userName(u string) string {
	if u == "" {
		return "-"
	}
	return u
}

// percent writes a rate with one decimal ("11.2%").
func percent(f float64) string { return strconv.FormatFloat(f*100, 'f', 1, 64) + "%" }
