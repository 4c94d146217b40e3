package main

import (
	"fmt"
	"strconv"

	"github.com/jetrelay/jetrelay/relay/config"
	"golang.org/x/crypto/bcrypt"
)

// consolePasswdAbout describes `jetrelay console passwd`.
const consolePasswdAbout = "Reads a password on stdin (one trailing newline stripped) and prints the\n" +
	"admin.console.users entry for NAME with its bcrypt hash (the hashing of\n" +
	"submission users), ready to paste under admin.console.users."

func runConsole(args []string, sio stdio) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(sio.out, "Usage: jetrelay console passwd [--role viewer|operator] NAME < password\n\n"+
			consolePasswdAbout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] != "passwd" {
		fmt.Fprintf(sio.err, "jetrelay console: unknown subcommand %q (want: passwd)\n", args[0])
		return 2
	}
	fs := newFlags("console passwd", "console passwd [--role viewer|operator] NAME < password", consolePasswdAbout, sio)
	role := fs.String("role", config.RoleViewer,
		"viewer (read only) or operator (also retry, hold, release, delete, unsuppress)")
	pos, rc, ok := parseMixed(fs, args[1:])
	if !ok {
		return rc
	}
	if len(pos) != 1 || pos[0] == "" {
		fmt.Fprintln(sio.err, "jetrelay console passwd: give one user name")
		return 2
	}
	if *role != config.RoleViewer && *role != config.RoleOperator {
		fmt.Fprintf(sio.err, "jetrelay console passwd: --role must be viewer or operator, not %q\n", *role)
		return 2
	}
	pass, err := readPassword(sio.in)
	if err != nil {
		fmt.Fprintf(sio.err, "jetrelay console passwd: %v\n", err)
		return 1
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcryptCost)
	if err != nil {
		fmt.Fprintf(sio.err, "jetrelay console passwd: %v\n", err)
		return 1
	}
	fmt.Fprintf(sio.out, "- {name: %s, password_hash: %q, role: %s}\n", strconv.Quote(pos[0]), h, *role)
	return 0
}
