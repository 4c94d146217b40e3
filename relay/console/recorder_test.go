package console_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

type recorder struct{ *httptest.ResponseRecorder }

func newRecorder() recorder  { return recorder{httptest.NewRecorder()} }
func (r recorder) code() int { return r.Code }
func mustReq(t testing.TB, path string) *http.Request {
	t.Helper()
	return httptest.NewRequest(http.MethodGet, path, nil)
}
