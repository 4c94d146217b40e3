package queue

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// redactedMask replaces a password or token in a URL shown to people.
const redactedMask = "xxxxx"

// RedactURL returns a NATS server URL, or a comma-separated list of them,
// with credentials masked so it can be logged or put into an error:
// "nats://user:secret@h:4222" becomes "nats://user:xxxxx@h:4222" and a token
// URL "nats://s3cr3t@h:4222" becomes "nats://xxxxx@h:4222". A URL without a
// scheme ("user:pw@h:4222", which nats.go accepts) is handled alike. The user
// info is everything before the last '@' of an entry, so a password holding
// '/', '#' or '?' that was not percent-encoded is masked too.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		parts[i] = redactOne(p)
	}
	return strings.Join(parts, ",")
}

func redactOne(u string) string {
	start := 0
	if i := strings.Index(u, "://"); i >= 0 {
		start = i + len("://")
	}
	at := strings.LastIndex(u[start:], "@")
	if at < 0 {
		return u
	}
	info := u[start : start+at]
	masked := redactedMask
	if user, _, ok := strings.Cut(info, ":"); ok {
		masked = user + ":" + redactedMask
	}
	return u[:start] + masked + u[start+at:]
}

// urlSecrets returns the passwords and tokens in a URL list, raw and
// percent-decoded, for scrubbing texts that might quote them.
func urlSecrets(urls string) []string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		start := 0
		if i := strings.Index(u, "://"); i >= 0 {
			start = i + len("://")
		}
		at := strings.LastIndex(u[start:], "@")
		if at < 0 {
			continue
		}
		info := u[start : start+at]
		secret := info
		if _, pw, ok := strings.Cut(info, ":"); ok {
			secret = pw
		}
		if secret == "" {
			continue
		}
		out = append(out, info, secret)
		if dec, err := url.PathUnescape(secret); err == nil && dec != secret {
			out = append(out, dec)
		}
	}
	return out
}

// redactedError hides credentials of the URL list in an error's text (a
// nats.go error may quote the URL it failed to parse or dial). errors.Is and
// errors.As still see the original error.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactError returns err with every password or token of urls masked in
// its text; nil stays nil.
func redactError(err error, urls string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		// Its detail quotes the bad part, which may be in the password.
		msg = fmt.Sprintf("%s %q: invalid URL (percent-encode special characters in user and password)",
			ue.Op, RedactURL(ue.URL))
	}
	for _, s := range urlSecrets(urls) {
		msg = strings.ReplaceAll(msg, s, redactedMask)
	}
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
