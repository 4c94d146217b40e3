package config

import (
	"errors"
	"fmt"
	"strings"
)

// Problem is one validation finding.
type Problem struct {
	File string // "" = the config file; else an included file
	Path string
	Line int
	Msg  string
}

func (p Problem) Error() string {
	if p.File != "" {
		q := p
		q.File = ""
		return p.File + ": " + q.Error()
	}
	if p.Path == "" && p.Line > 0 {
		return fmt.Sprintf("line %d: %s", p.Line, p.Msg)
	}
	if p.Path == "" {
		return p.Msg
	}
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", p.Line, p.Path, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.Path, p.Msg)
}

// problems collects validation findings with their lines.
type problems struct {
	c    *Config
	errs []error
}

func (ps *problems) add(path string, format string, args ...any) {
	parts := strings.Split(strings.NewReplacer("[", ".", "]", "").Replace(path), ".")
	ps.errs = append(ps.errs, Problem{Path: path, Line: ps.c.Line(parts...), Msg: fmt.Sprintf(format, args...)})
}

func (ps *problems) err() error { return errors.Join(ps.errs...) }
