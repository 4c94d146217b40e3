package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// helpFlag matches a flag line of flag.PrintDefaults: "  -name type".
var helpFlag = regexp.MustCompile(`(?m)^  -([A-Za-z0-9][A-Za-z0-9_-]*)`)

// helpCase is one (sub)command and the flags its --help prints, read from
// the help text itself rather than from describe.
type helpCase struct {
	path  []string
	flags []string
}

// helpCases runs --help for every command and registered subcommand.
func helpCases(t *testing.T) []helpCase {
	t.Helper()
	var out []helpCase
	subs := subcommands()
	for name := range commands() {
		paths := [][]string{{name}}
		for _, s := range subs[name] {
			paths = append(paths, []string{name, s})
		}
		for _, p := range paths {
			rc, stdout, _ := runCmd(t, append(append([]string{}, p...), "--help")...)
			if rc != 0 {
				t.Fatalf("jetrelay %s --help: exit %d", strings.Join(p, " "), rc)
			}
			c := helpCase{path: p}
			for _, m := range helpFlag.FindAllStringSubmatch(stdout, -1) {
				c.flags = append(c.flags, m[1])
			}
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.Join(out[i].path, " ") < strings.Join(out[j].path, " ") })
	return out
}

func spelled(flag string) string {
	if len(flag) == 1 {
		return "-" + flag
	}
	return "--" + flag
}

// TestCommandTable checks the registry itself: every command and
// subcommand is described, a subcommand has its own flag set, and a
// command that dispatches on subcommands is listed in subcommands().
func TestCommandTable(t *testing.T) {
	docs, err := describeAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != len(commands()) {
		t.Fatalf("described %d commands, the table has %d", len(docs), len(commands()))
	}
	subs := subcommands()
	for _, d := range docs {
		if len(d.subs) != len(subs[d.path]) {
			t.Errorf("%s: described %d subcommands, registered %d", d.path, len(d.subs), len(subs[d.path]))
		}
		for _, s := range subs[d.path] {
			if !strings.Contains(d.help, s) {
				t.Errorf("%s --help does not mention its subcommand %q", d.path, s)
			}
		}
		if len(subs[d.path]) > 0 || d.usage != "" {
			continue
		}
		// No flag set and no registered subcommands: only a bare command may do that.
		if line := firstLine(d.help); line != "Usage: jetrelay "+d.path {
			t.Errorf("%s builds no flag set for --help and its usage line is %q: if it dispatches to "+
				"subcommands, list them in subcommands(); else build its flags with newFlags", d.path, line)
		}
	}
	for name := range subs {
		if _, ok := commands()[name]; !ok {
			t.Errorf("subcommands() lists %q, which is not a command", name)
		}
	}
}

// TestCompletionMentionsEveryCommandAndFlag compares each script with the
// flags --help prints.
func TestCompletionMentionsEveryCommandAndFlag(t *testing.T) {
	cases := helpCases(t)
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			rc, script, stderr := runCmd(t, "completion", shell)
			if rc != 0 {
				t.Fatalf("exit %d: %s", rc, stderr)
			}
			for _, c := range cases {
				if !strings.Contains(script, c.path[len(c.path)-1]) {
					t.Errorf("no command %q", strings.Join(c.path, " "))
				}
				if len(c.flags) == 0 {
					continue
				}
				block := completionBlock(t, shell, script, strings.Join(c.path, " "))
				for _, f := range c.flags {
					want := spelled(f)
					if shell == "fish" {
						want = map[bool]string{true: "-s ", false: "-l "}[len(f) == 1] + f
					}
					if !strings.Contains(block, want) {
						t.Errorf("%s: flag %s missing", strings.Join(c.path, " "), want)
					}
				}
			}
		})
	}
}

// completionBlock returns the part of script that completes path's flags.
func completionBlock(t *testing.T, shell, script, path string) string {
	t.Helper()
	var marker string
	switch shell {
	case "bash":
		marker = `"` + path + `") flags=`
	case "zsh":
		marker = "('" + path + "') _arguments"
	case "fish":
		marker = `= "` + path + `"'`
	}
	var lines []string
	in := false
	for _, line := range strings.Split(script, "\n") {
		switch {
		case strings.Contains(line, marker):
			in = true
		case shell == "zsh" && in && strings.HasPrefix(strings.TrimSpace(line), "('"):
			in = false
		case shell == "fish" && !strings.Contains(line, marker):
			in = false
		}
		if in {
			lines = append(lines, line)
		}
		if shell == "bash" {
			in = false
		}
	}
	if len(lines) == 0 {
		t.Errorf("%s: no completion block for %q", shell, path)
	}
	return strings.Join(lines, "\n")
}

// TestBashCompletion runs the bash script's completion function.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash (which scripts/test runs in) is not on PATH: %v", err)
	}
	rc, script, _ := runCmd(t, "completion", "bash")
	if rc != 0 {
		t.Fatal("completion bash failed")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "jetrelay.bash")
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		line string
		want string
	}{
		{"jetrelay qu", "queue"},
		{"jetrelay queue re", "retry release"},
		{"jetrelay queue ls --st", "--state"},
		{"jetrelay logs --fo", "--follow"},
		{"jetrelay logs -f", "-f"},
		{"jetrelay serve --config rel", "relay.yaml"},
		{"jetrelay nosuch --x", ""},
	}
	for _, tc := range cases {
		t.Run(tc.line, func(t *testing.T) {
			words := strings.Fields(tc.line)
			if strings.HasSuffix(tc.line, " ") {
				words = append(words, "")
			}
			prog := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _jetrelay; echo "${COMPREPLY[*]}"`
			cmd := exec.Command(bash, append([]string{"--norc", "-c", prog, "bash", file}, words...)...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestManListsEveryCommand checks the man page names every command,
// subcommand and flag, and that no help text turned into a roff request.
func TestManListsEveryCommand(t *testing.T) {
	rc, page, stderr := runCmd(t, "man")
	if rc != 0 {
		t.Fatalf("exit %d: %s", rc, stderr)
	}
	for _, c := range helpCases(t) {
		path := strings.Join(c.path, " ")
		if !strings.Contains(page, `.SS "jetrelay `+roffEscape(path)) {
			t.Errorf("no section for %q", path)
		}
		for _, f := range c.flags {
			if !strings.Contains(page, "\n.B "+roffEscape(spelled(f))+"\n") &&
				!strings.Contains(page, "\n.BI "+roffEscape(spelled(f))+` "`) {
				t.Errorf("%s: flag %s missing", path, spelled(f))
			}
		}
	}
	macros := regexp.MustCompile(`^\.(TH|SH|SS|TP|PP|B|BI|BR|I|IR|RB|RI|nf|fi|\\")( |$)`)
	for i, line := range strings.Split(page, "\n") {
		if (strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'")) && !macros.MatchString(line) {
			t.Errorf("line %d is an unexpected roff request: %q", i+1, line)
		}
	}
}

func TestRoffEscape(t *testing.T) {
	for in, want := range map[string]string{
		`.PP not a request`:   `\&.PP not a request`,
		`'quoted`:             `\&'quoted`,
		`a\b --flag`:          `a\eb \-\-flag`,
		"two\nlines":          "two lines",
		`say "hi"` + "\u00a0": `say "hi"` + "\u00a0",
	} {
		if got := roffEscape(in); got != want {
			t.Errorf("roffEscape(%q) = %q, want %q", in, got, want)
		}
	}
	if got := roffArg(`a "b"`); got != `a \(dqb\(dq` {
		t.Errorf("roffArg = %q", got)
	}
}

func TestCompletionUsage(t *testing.T) {
	bad := [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}, {"man", "extra"}}
	for _, args := range bad {
		if rc, _, stderr := runCmd(t, args...); rc != 2 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, rc, stderr)
		}
	}
}
