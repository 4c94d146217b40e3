package main

import "fmt"

func runServe(args []string, io stdio) int {
	fmt.Fprintln(io.err, "jetrelay serve: being wired")
	return 2
}

// checkDKIMKeys is replaced by the DKIM key checks (issue 5).
func checkDKIMKeys(cfg any) (warnings, errs []string) { return nil, nil }
