package sink

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func getJSON(t *testing.T, method, url string, v any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("%s %s: decode: %v", method, url, err)
		}
	}
	return resp.StatusCode
}

func TestHTTPControl(t *testing.T) {
	t.Parallel()
	s := startSink(t, Options{})
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)

	c := dial(t, s, false)
	for i := 0; i < 2; i++ {
		if err := sendMsg(c, []string{"a@x.test"}, "\r\nbody\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	var w WaitReply
	if code := getJSON(t, "GET", hs.URL+"/wait?n=2&timeout=10s", &w); code != 200 || !w.Reached || w.NthUnixNs == 0 || w.Messages != 2 {
		t.Fatalf("wait: %d %+v", code, w)
	}
	var miss WaitReply
	if code := getJSON(t, "GET", hs.URL+"/wait?n=3&timeout=1ms", &miss); code != 200 || miss.Reached || miss.NthUnixNs != 0 {
		t.Errorf("wait for a missing message: %d %+v", code, miss)
	}
	var st Stats
	if getJSON(t, "GET", hs.URL+"/count", &st); st.Messages != 2 || st.Bytes != 16 || st.Connections != 1 {
		t.Errorf("count: %+v", st)
	}
	if code := getJSON(t, "POST", hs.URL+"/reset", nil); code != 200 {
		t.Errorf("reset: %d", code)
	}
	if getJSON(t, "GET", hs.URL+"/count", &st); st != (Stats{}) {
		t.Errorf("count after reset: %+v", st)
	}
	for _, bad := range []string{"/wait", "/wait?n=0", "/wait?n=1&timeout=2h", "/wait?n=1&timeout=x"} {
		if code := getJSON(t, "GET", hs.URL+bad, nil); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", bad, code)
		}
	}
	if code := getJSON(t, "GET", hs.URL+"/reset", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /reset: %d, want 405", code)
	}
}
