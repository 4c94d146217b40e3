package main

import "strconv"

// plural formats a count with its noun, singular for one: "1 domain",
// "3 domains", "1 entry", "2 entries".
func plural(n int, noun string) string {
	s := strconv.Itoa(n) + " "
	if n == 1 {
		return s + noun
	}
	switch {
	case len(noun) > 1 && noun[len(noun)-1] == 'y' && !isVowel(noun[len(noun)-2]):
		return s + noun[:len(noun)-1] + "ies"
	case len(noun) > 1 && (noun[len(noun)-1] == 's' || noun[len(noun)-1] == 'x' || noun[len(noun)-2:] == "sh" ||
		noun[len(noun)-2:] == "ch"):
		return s + noun + "es"
	}
	return s + noun + "s"
}

func isVowel(b byte) bool {
	switch b {
	case 'a', 'e', 'i', 'o', 'u':
		return true
	}
	return false
}
