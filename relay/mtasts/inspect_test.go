package mtasts

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jetrelay/jetrelay/relay/smtpclient"
)

// Inspect shows the record, a live fetch and the cached policy and
// decides as Lookup does, writing nothing: a fresh cached policy with an
// unchanged id stays in force even when the live one differs; a new id
// would take the live one; without a KV bucket the cache is reported
// unavailable and the live policy decides.
func TestInspect(t *testing.T) {
	f := newFixture(t, enforceBody)
	s := f.store(t, nil)
	wantMode(t, lookup(t, s), smtpclient.STSEnforce, "") // cached: enforce, id 1
	f.srv.set(http.StatusOK, "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	in := s.Inspect(ctx, "example.com")
	if in.ID != "1" || in.Record != "v=STSv1; id=1" || in.Live == nil || in.Live.Mode != smtpclient.STSTesting ||
		in.Cached == nil || !in.Cached.Fresh || in.Source != "cache" || in.InForce.Mode != smtpclient.STSEnforce ||
		in.Decision.Policy.Mode != smtpclient.STSEnforce {
		t.Fatalf("inspection %+v: want the cached enforce policy in force, the live testing one shown", in)
	}
	f.zone.SetTXTRecords("_mta-sts.example.com", "v=STSv1; id=2")
	in = s.Inspect(ctx, "example.com")
	if in.Source != "fetch" || in.Decision.Policy.Mode != smtpclient.STSTesting {
		t.Fatalf("new id: inspection %+v, want the live policy in force", in)
	}
	e, err := s.o.KV.Get(ctx, "example.com")
	if err != nil || e.Revision() != 1 {
		t.Fatalf("cache entry %v (%v): Inspect wrote the cache", e, err)
	}
	o := s.o
	o.KV = nil
	ins, err := NewInspector(o)
	if err != nil {
		t.Fatal(err)
	}
	in = ins.Inspect(ctx, "example.com")
	if in.CacheError == "" || in.Cached != nil || in.Source != "fetch" || in.Decision.Policy == nil {
		t.Fatalf("without KV: inspection %+v", in)
	}
}
