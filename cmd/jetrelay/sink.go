package main

import "fmt"

// runSink is not built yet; its issue's owner replaces this file.
func runSink(args []string, io stdio) int {
	fmt.Fprintln(io.err, "jetrelay: this command is not available in this build yet")
	return 2
}
