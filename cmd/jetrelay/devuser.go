package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jetrelay/jetrelay/relay/config"
	"golang.org/x/crypto/bcrypt"
)

// Dev user of the built-in default configuration.
const (
	devUserName     = "dev"
	devPasswordFile = "dev.password"
)

// addDevUser adds the loopback dev user to cfg. Its password is generated
// at first start, printed once, and kept (mode 0600) under data_dir.
func addDevUser(cfg *config.Config, sio stdio) error {
	path := filepath.Join(cfg.DataDir, devPasswordFile)
	pass, err := os.ReadFile(path)
	fresh := false
	if os.IsNotExist(err) {
		var raw [18]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return err
		}
		pass = []byte(base64.RawURLEncoding.EncodeToString(raw[:]))
		if err := os.WriteFile(path, append(pass, '\n'), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		fresh = true
	} else if err != nil {
		return err
	}
	p := strings.TrimSpace(string(pass))
	hash, err := bcrypt.GenerateFromPassword([]byte(p), bcryptCost)
	if err != nil {
		return err
	}
	cfg.Submission.Users = append(cfg.Submission.Users, config.User{
		Name: devUserName, PasswordHash: string(hash), AllowedFrom: []string{"*"},
	})
	if fresh {
		fmt.Fprintf(sio.err, "\njetrelay: created the dev submission user (loopback only; shown once, kept in %s):\n"+
			"    user: %s\n    password: %s\n\n", path, devUserName, p)
	}
	return nil
}
