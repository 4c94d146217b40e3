package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleConfigPassesCheck: configs/jetrelay.yaml passes `jetrelay check`
// as the README tells operators to run it, with no problem and no warning.
// That it shows every key is relay/config's TestExampleHasEveryKey.
func TestExampleConfigPassesCheck(t *testing.T) {
	var out, errb bytes.Buffer
	path := filepath.Join("..", "..", "configs", "jetrelay.yaml")
	if rc := run([]string{"check", "--config", path}, stdio{strings.NewReader(""), &out, &errb}); rc != 0 {
		t.Fatalf("jetrelay check --config configs/jetrelay.yaml: rc=%d\n%s%s", rc, out.String(), errb.String())
	}
	if got := out.String(); got != path+": OK\n" {
		t.Fatalf("want only %q, got:\n%s%s", path+": OK", got, errb.String())
	}
}
