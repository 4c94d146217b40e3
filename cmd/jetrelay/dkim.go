package main

import "fmt"

// runDKIM is not built yet; its issue's owner replaces this file.
func runDKIM(args []string, io stdio) int {
	fmt.Fprintln(io.err, "jetrelay: this command is not available in this build yet")
	return 2
}
