package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/msgindex"
)

// Index is what the Messages page needs from relay/msgindex (*msgindex.Index).
type Index interface {
	// Search returns one page of summaries matching q, newest first.
	Search(ctx context.Context, q msgindex.Query) (msgindex.Page, error)
	// Get returns one message's summary, msgindex.ErrNotFound when it
	// has none.
	Get(ctx context.Context, queueID string) (msgindex.Summary, error)
}

// pageSize is the number of messages per page.
const pageSize = 50

// messagesData is the Messages page.
type messagesData struct {
	Form     searchForm
	Statuses []string
	Searched bool
	Items    []msgindex.Summary
	Next     string // query string of the next page
	Problem  string // a form value that was not understood
	Missing  bool   // no index on this node
}

// searchForm is the search as the form holds it.
type searchForm struct {
	Rcpt, From, QueueID, MsgID, Meta, Status, Since, Until, Cursor string
}

// timeLayout is the form's time format (an <input type="datetime-local">
// value, read as UTC).
const timeLayout = "2006-01-02T15:04"

// messages searches the message index: recipient, sender, queue id,
// Message-ID, meta key=value pairs, status and time range; newest first,
// pageSize a page.
func (c *Console) messages(w http.ResponseWriter, r *http.Request, s *session) {
	f := formOf(r.URL.Query())
	d := messagesData{Form: f, Statuses: msgindex.Statuses, Missing: c.o.Index == nil}
	q, problem := f.query()
	d.Problem = problem
	if c.o.Index != nil && problem == "" {
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		pg, err := c.o.Index.Search(ctx, q)
		if errors.Is(err, msgindex.ErrBadQuery) {
			d.Problem = strings.TrimPrefix(err.Error(), "msgindex: ")
			c.render(w, http.StatusBadRequest, "messages", newPage(s, "Messages", "messages", d))
			return
		}
		if err != nil {
			c.fail(w, r, http.StatusServiceUnavailable, "the message index is unavailable: "+err.Error())
			return
		}
		d.Searched, d.Items = true, pg.Items
		if pg.Next != "" {
			nf := f
			nf.Cursor = pg.Next
			d.Next = "/console/messages?" + nf.values().Encode()
		}
	}
	c.render(w, http.StatusOK, "messages", newPage(s, "Messages", "messages", d))
}

func formOf(v url.Values) searchForm {
	get := func(k string) string {
		s := strings.TrimSpace(v.Get(k))
		if len(s) > maxFilterLen*4 {
			s = s[:maxFilterLen*4]
		}
		return s
	}
	return searchForm{Rcpt: get("rcpt"), From: get("from"), QueueID: get("id"), MsgID: get("msgid"),
		Meta: get("meta"), Status: get("status"), Since: get("since"), Until: get("until"), Cursor: get("cursor")}
}

func (f searchForm) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"rcpt": f.Rcpt, "from": f.From, "id": f.QueueID, "msgid": f.MsgID,
		"meta": f.Meta, "status": f.Status, "since": f.Since, "until": f.Until, "cursor": f.Cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

// query turns the form into an index query, or says what is wrong.
func (f searchForm) query() (msgindex.Query, string) {
	q := msgindex.Query{Rcpt: f.Rcpt, From: f.From, QueueID: f.QueueID, MsgID: f.MsgID, Limit: pageSize,
		Cursor: f.Cursor}
	if f.Status != "" {
		if !slices.Contains(msgindex.Statuses, f.Status) {
			return q, "unknown status " + f.Status
		}
		q.Status = f.Status
	}
	for _, kv := range strings.Fields(f.Meta) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return q, "meta takes key=value pairs separated by spaces"
		}
		if q.Meta == nil {
			q.Meta = map[string]string{}
		}
		q.Meta[k] = v
	}
	var err error
	for _, t := range []struct {
		s   string
		dst *time.Time
	}{{f.Since, &q.Since}, {f.Until, &q.Until}} {
		if t.s == "" {
			continue
		}
		if *t.dst, err = time.Parse(timeLayout, t.s); err != nil {
			return q, "times are YYYY-MM-DDTHH:MM (UTC)"
		}
	}
	return q, ""
}

// lastReply is the newest reply among a summary's recipients.
func lastReply(rs []msgindex.RcptState) string {
	var last msgindex.RcptState
	for _, r := range rs {
		if r.Reply != "" && !r.At.Before(last.At) {
			last = r
		}
	}
	if last.Reply == "" {
		return ""
	}
	return strings.TrimSpace(strings.Join([]string{codeText(last.Code), last.Enh, last.Reply}, " "))
}

func codeText(code int) string {
	if code == 0 {
		return ""
	}
	return strconv.Itoa(code)
}

// rcptSummary lists a summary's recipients briefly for the result table.
func rcptSummary(rs []msgindex.RcptState) string {
	var b strings.Builder
	for i, r := range rs {
		if i == 3 {
			b.WriteString(" …")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.Addr)
	}
	return b.String()
}
