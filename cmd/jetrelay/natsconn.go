package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"

	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/rs/zerolog"
)

// natsFlags are the flags every ops command (logs, queue, suppress) takes
// to reach the NATS that jetrelay uses.
type natsFlags struct {
	config, url, user, passwordFile, creds string
}

// addNATSFlags registers --config, --nats, --user, --password-file and --creds.
func addNATSFlags(fs *flag.FlagSet) *natsFlags {
	f := &natsFlags{}
	fs.StringVar(&f.config, "config", "", "config file (the one serve uses): NATS is nats.url, or the embedded server's\n"+
		"nats.listen with the password in data_dir/nats.password (default: the built-in default)")
	fs.StringVar(&f.url, "nats", "", "NATS server URL(s), overriding the config")
	fs.StringVar(&f.user, "user", "", "NATS user (with --password-file)")
	fs.StringVar(&f.passwordFile, "password-file", "", "file holding the NATS password")
	fs.StringVar(&f.creds, "creds", "", "NATS credentials file (JWT + nkey)")
	return f
}

// loadConfig returns --config's configuration, or the built-in default.
func (f *natsFlags) loadConfig() (*config.Config, error) {
	if f.config == "" {
		return config.Default(), nil
	}
	return config.Load(f.config)
}

// natsOptions resolves where and how to connect. It never starts an
// embedded server: the embedded one is reached on its client port.
func (f *natsFlags) natsOptions() (queue.Options, error) {
	cfg, err := f.loadConfig()
	if err != nil {
		return queue.Options{}, err
	}
	o := queue.Options{Replicas: cfg.NATS.Replicas, Logger: zerolog.Nop()}
	switch {
	case f.url != "":
		o.URL = f.url
	case cfg.NATS.URL != "":
		o.URL, o.Credentials = cfg.NATS.URL, cfg.NATS.Credentials
		o.User, o.PasswordFile = cfg.NATS.User, cfg.NATS.PasswordFile
	default:
		if cfg.NATS.Listen == "" {
			return o, errors.New("the embedded NATS server of this config has no client port (nats.listen): " +
				"set one, or pass --nats")
		}
		host, port, err := net.SplitHostPort(cfg.NATS.Listen)
		if err != nil {
			return o, fmt.Errorf("nats.listen %q: %w", cfg.NATS.Listen, err)
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		o.URL = "nats://" + net.JoinHostPort(host, port)
		o.User, o.PasswordFile = queue.EmbeddedUser, filepath.Join(cfg.DataDir, queue.PasswordFileName)
	}
	if f.creds != "" {
		o.Credentials, o.User, o.PasswordFile = f.creds, "", ""
	}
	if f.user != "" {
		o.User, o.Credentials = f.user, ""
	}
	if f.passwordFile != "" {
		o.PasswordFile = f.passwordFile
	}
	return o, nil
}

// connectNATS connects to the NATS jetrelay uses (without touching streams).
func connectNATS(ctx context.Context, f *natsFlags, name string) (*queue.Queue, error) {
	o, err := f.natsOptions()
	if err != nil {
		return nil, err
	}
	o.Name = "jetrelay " + name
	return queue.Connect(ctx, o)
}
