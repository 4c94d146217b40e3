// Command packaging builds jetrelay's .deb from nfpm.yaml with nfpm as a Go
// library, so packaging needs no tool outside the Go toolchain. It lives in
// its own module (packaging/go.mod): nfpm's dependencies never enter the
// product's module graph. scripts/package runs it; run by hand:
//
//	cd packaging && go run . --version 1.2.3 --arch amd64 --stage DIR --out DIR
//
// DIR (--stage) holds the binary, jetrelay.1.gz and the completion scripts
// (scripts/package makes them with `jetrelay man` and `jetrelay completion`).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "packaging: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("packaging", flag.ContinueOnError)
	conf := fs.String("config", "nfpm.yaml", "nfpm configuration")
	version := fs.String("version", "", "Debian package version (required)")
	arch := fs.String("arch", "", "Go architecture: amd64, arm64, ... (required)")
	stage := fs.String("stage", "", "directory with the built binary, man page and completions (required)")
	libc := fs.String("libc-depends", "", `dependency of a cgo binary, e.g. "libc6 (>= 2.34)"; "" for a static one`)
	out := fs.String("out", ".", "directory to write the .deb to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version == "" || *arch == "" || *stage == "" {
		return fmt.Errorf("--version, --arch and --stage are required")
	}
	env := map[string]string{"VERSION": *version, "ARCH": *arch, "STAGE": *stage, "LIBC_DEPENDS": *libc}
	cfg, err := nfpm.ParseFileWithEnvMapping(*conf, func(k string) string { return env[k] })
	if err != nil {
		return fmt.Errorf("%s: %w", *conf, err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", *conf, err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return err
	}
	info = nfpm.WithDefaults(info)
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return err
	}
	target := filepath.Join(*out, pkg.ConventionalFileName(info))
	f, err := os.Create(target)
	if err != nil {
		return err
	}
	info.Target = target
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(target)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Println(target)
	return nil
}
