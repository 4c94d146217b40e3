package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/guard"
)

const userResumeAbout = `Lifts the bounce-rate guard's pause of a submission user on every node: its
MAIL commands are accepted again, a resumed event is published, and a new
window starts (the bounces and complaints counted before it no longer count
towards the guard). The user must be one of submission.users (from
--config). A user that is not paused is no error.`

// userResumeTimeout bounds the command's talk with NATS.
const userResumeTimeout = 15 * time.Second

// runUserResume is `user resume NAME`.
func runUserResume(args []string, sio stdio) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return userResumeMain(ctx, args, sio)
}

// userResumeMain is `user resume NAME` with the caller's context.
func userResumeMain(ctx context.Context, args []string, sio stdio) int {
	fs := newFlags("user resume", "user resume NAME [flags]", userResumeAbout, sio)
	nf := addNATSFlags(fs)
	pos, rc, ok := parseMixed(fs, args)
	if !ok {
		return rc
	}
	if len(pos) != 1 {
		fmt.Fprintln(sio.err, "jetrelay user resume: usage: jetrelay user resume NAME [flags]")
		return 2
	}
	name := pos[0]
	fail := func(err error) int {
		_ = tprintf(sio.err, "jetrelay user resume: %v\n", err)
		return 1
	}
	cfg, err := nf.loadConfig()
	if err != nil {
		return fail(fmt.Errorf("config: %w", err))
	}
	if !slices.ContainsFunc(cfg.Submission.Users, func(u config.User) bool { return u.Name == name }) {
		return fail(fmt.Errorf("no user %q in submission.users", name))
	}
	ctx, cancel := context.WithTimeout(ctx, userResumeTimeout)
	defer cancel()
	q, err := connectNATS(ctx, nf, "user resume")
	if err != nil {
		return fail(err)
	}
	defer q.Close()
	em, closeEvents := cliEmitter(ctx, q, sio)
	defer closeEvents()
	switch err := guard.Resume(ctx, q.JetStream(), em, name, actor()); {
	case errors.Is(err, guard.ErrNotPaused):
		_ = tprintf(sio.out, "nothing to resume: %s is not paused\n", name)
		return 0
	case err != nil:
		return fail(err)
	}
	_ = tprintf(sio.out, "resumed %s on every node; a new bounce-rate window starts\n", name)
	return 0
}
