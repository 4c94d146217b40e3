package main

import "fmt"

func runServe(args []string, io stdio) int {
	fmt.Fprintln(io.err, "jetrelay serve: being wired")
	return 2
}
