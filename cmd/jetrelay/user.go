package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// bcryptCost is the cost of password hashes `jetrelay user hash` makes.
const bcryptCost = 10

// userHashAbout describes `jetrelay user hash`.
const userHashAbout = "Reads a password on stdin (one trailing newline stripped) and prints its\n" +
	"bcrypt hash for submission.users[].password_hash."

func runUser(args []string, sio stdio) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(sio.out, "Usage: jetrelay user hash\n       jetrelay user resume NAME [flags]\n\n"+userHashAbout+
			"\n\n"+userResumeAbout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "resume" {
		return runUserResume(args[1:], sio)
	}
	if args[0] != "hash" {
		fmt.Fprintf(sio.err, "jetrelay user: unknown subcommand %q (want: hash, resume)\n", args[0])
		return 2
	}
	fs := newFlags("user hash", "user hash < password", userHashAbout, sio)
	if rc, ok := parseFlags(fs, args[1:]); !ok {
		return rc
	}
	pass, err := readPassword(sio.in)
	if err != nil {
		fmt.Fprintf(sio.err, "jetrelay user hash: %v\n", err)
		return 1
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcryptCost)
	if err != nil {
		fmt.Fprintf(sio.err, "jetrelay user hash: %v\n", err)
		return 1
	}
	fmt.Fprintln(sio.out, string(h))
	return 0
}

// readPassword reads all of r and strips one trailing newline (LF or CRLF).
func readPassword(r io.Reader) (string, error) {
	b, err := io.ReadAll(bufio.NewReader(io.LimitReader(r, 4096)))
	if err != nil {
		return "", err
	}
	s := string(b)
	s = strings.TrimSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\r")
	if s == "" {
		return "", fmt.Errorf("empty password on stdin")
	}
	if len(s) > 72 {
		return "", fmt.Errorf("password longer than 72 bytes (bcrypt's limit)")
	}
	return s, nil
}
