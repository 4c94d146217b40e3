package sink

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// maxWait bounds GET /wait's timeout parameter.
const maxWait = time.Hour

// WaitReply is the JSON body of GET /wait: the counters, whether the Nth
// message arrived in time, and its arrival time.
type WaitReply struct {
	Stats
	Reached   bool  `json:"reached"`
	NthUnixNs int64 `json:"nth_unix_ns,omitempty"`
}

// Handler serves the sink's HTTP control surface:
//
//	GET  /count                 counters as JSON (Stats)
//	POST /reset                 zero the counters
//	GET  /wait?n=N&timeout=60s  block until the Nth message since the reset
//	                            arrived (or the timeout, at most 1h); WaitReply
func (s *Sink) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		s.Reset()
		writeJSON(w, http.StatusOK, map[string]bool{"reset": true})
	})
	mux.HandleFunc("GET /wait", s.serveWait)
	return mux
}

func (s *Sink) serveWait(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := strconv.ParseInt(q.Get("n"), 10, 64)
	if err != nil || n < 1 {
		http.Error(w, "want n >= 1", http.StatusBadRequest)
		return
	}
	timeout := time.Minute
	if t := q.Get("timeout"); t != "" {
		timeout, err = time.ParseDuration(t)
		if err != nil || timeout <= 0 || timeout > maxWait {
			http.Error(w, "bad timeout (a Go duration up to 1h)", http.StatusBadRequest)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	at, err := s.WaitFor(ctx, n)
	reply := WaitReply{Reached: err == nil || err == ErrArrivalNotKept}
	if err == nil {
		reply.NthUnixNs = at.UnixNano()
	}
	reply.Stats = s.Stats()
	writeJSON(w, http.StatusOK, reply)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
