package clustertest

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Packages the harness builds.
const (
	JetrelayPkg   = "github.com/jetrelay/jetrelay/cmd/jetrelay"
	NATSServerPkg = "github.com/nats-io/nats-server/v2" // the version in go.mod
)

// GoBuild runs `go build -o out pkg` (no -race: these are the processes
// under test, not the test) from the current directory, which must be
// inside jetrelay's module.
func GoBuild(ctx context.Context, out, pkg string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}
