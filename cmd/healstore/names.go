package main

import (
	"strconv"
	"strings"
	"unicode"
)

// shownName is how text output (ls, stat, put) prints an object name: as
// it is, unless it holds a control character (a newline, an escape
// sequence), which is then shown quoted and escaped, Go style ("a\nb").
// Object names may hold any UTF-8 but NUL, and whoever can write to the
// store chooses them: printed raw, a newline would split one name into two
// lines for a script reading ls, and an escape sequence would reach the
// terminal of whoever lists the store. --json prints names exactly.
func shownName(name string) string {
	if strings.IndexFunc(name, unicode.IsControl) < 0 {
		return name
	}
	return strconv.Quote(name)
}
