package console

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/jetrelay/jetrelay/relay/bounce"
)

// maxSuppressionRows bounds the Suppressions page.
const maxSuppressionRows = 100

// suppressionsData is the Suppressions page.
type suppressionsData struct {
	Query   string
	Rows    []bounce.Suppression
	Total   int // matching entries (Rows holds the newest maxSuppressionRows)
	Missing bool
}

// suppressions lists the suppression list, newest first, filtered by a
// case-insensitive substring of the address.
func (c *Console) suppressions(w http.ResponseWriter, r *http.Request, s *session) {
	q := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q")))
	if len(q) > maxFilterLen {
		q = q[:maxFilterLen]
	}
	d := suppressionsData{Query: q, Missing: c.o.Suppressions == nil}
	if c.o.Suppressions != nil {
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		all, err := c.o.Suppressions.List(ctx)
		if err != nil {
			c.fail(w, r, http.StatusServiceUnavailable, "the suppression list is unavailable: "+err.Error())
			return
		}
		for i := len(all) - 1; i >= 0; i-- { // List is oldest first
			if q != "" && !strings.Contains(all[i].Addr, q) {
				continue
			}
			d.Total++
			if len(d.Rows) < maxSuppressionRows {
				d.Rows = append(d.Rows, all[i])
			}
		}
	}
	p := newPage(s, "Suppressions", "suppressions", d)
	if a := r.URL.Query().Get("removed"); a != "" {
		p.Flash = "Removed " + clip(a) + " from the suppression list."
	}
	c.render(w, http.StatusOK, "suppressions", p)
}

// unsuppress removes one address (operator), recorded as an unsuppressed
// event with the console user as actor.
func (c *Console) unsuppress(w http.ResponseWriter, r *http.Request, s *session) {
	addr := r.PostFormValue("addr")
	if c.o.Suppressions == nil || addr == "" || len(addr) > 320 {
		c.fail(w, r, http.StatusBadRequest, "no address to remove")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	found, err := c.o.Suppressions.Remove(ctx, addr, "console:"+s.User)
	c.log.Info().Str("event", "console_action").Str("user", s.User).Str("action", "unsuppress").
		Str("rcpt", addr).Bool("found", found).AnErr("error", err).Msg("console operator action")
	switch {
	case err != nil:
		c.fail(w, r, http.StatusServiceUnavailable, "unsuppress failed: "+err.Error())
	case !found:
		c.fail(w, r, http.StatusNotFound, addr+" is not suppressed")
	default:
		http.Redirect(w, r, "/console/suppressions?"+url.Values{"removed": {bounce.NormalizeAddr(addr)}}.Encode(),
			http.StatusSeeOther)
	}
}
