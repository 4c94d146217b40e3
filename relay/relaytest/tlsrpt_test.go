package relaytest

import (
	"encoding/json"
	"strings"
	"testing"
)

// rfc8460Example is the example report of RFC 8460 §4.4 (shortened).
const rfc8460Example = `{
 "organization-name": "Company-X",
 "date-range": {"start-datetime": "2016-04-01T00:00:00Z", "end-datetime": "2016-04-01T23:59:59Z"},
 "contact-info": "sts-reporting@company-x.example",
 "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
 "policies": [{
   "policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: testing",
     "mx: *.mail.company-y.example", "max_age: 86400"], "policy-domain": "company-y.example",
     "mx-host": ["*.mail.company-y.example"]},
   "summary": {"total-successful-session-count": 5326, "total-failure-session-count": 303},
   "failure-details": [{"result-type": "certificate-expired", "sending-mta-ip": "2001:db8:abcd:0012::1",
     "receiving-mx-hostname": "mx1.mail.company-y.example", "failed-session-count": 100},
    {"result-type": "starttls-not-supported", "sending-mta-ip": "2001:db8:abcd:0013::1",
     "receiving-mx-hostname": "mx2.mail.company-y.example", "receiving-ip": "203.0.113.56",
     "failed-session-count": 200, "additional-information": "https://reports.company-x.example/x"}]
 }]
}`

// CheckTLSReport accepts the RFC's own example and refuses each kind of
// deviation from its schema.
func TestCheckTLSReport(t *testing.T) {
	cases := []struct{ name, from, to, want string }{
		{name: "example"},
		{name: "missing member", from: `"contact-info": "sts-reporting@company-x.example",`, want: `"contact-info" missing`},
		{name: "bad date", from: `"2016-04-01T00:00:00Z"`, to: `"2016-04-01"`, want: "start-datetime: not an RFC 3339"},
		{name: "policy type", from: `"policy-type": "sts"`, to: `"policy-type": "dmarc"`, want: "policy-type"},
		{name: "result type", from: `"certificate-expired"`, to: `"cert-expired"`, want: "result-type"},
		{name: "negative", from: `5326`, to: `-1`, want: "non-negative integer"},
		{name: "fraction", from: `303`, to: `3.5`, want: "non-negative integer"},
		{name: "unknown member", from: `"report-id"`, to: `"report_id"`, want: `"report_id" is not in RFC 8460`},
		{name: "bad ip", from: `"203.0.113.56"`, to: `"mx2"`, want: "not an IP address"},
		{name: "string list", from: `["*.mail.company-y.example"]}`, to: `"*.mail.company-y.example"}`, want: "mx-host"},
		{name: "no policies", from: `"policies": [{`, to: `"policies": [], "x": [{`, want: "non-empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			js := strings.Replace(rfc8460Example, c.from, c.to, 1)
			if c.from != "" && js == rfc8460Example {
				t.Fatalf("%q not in the example", c.from)
			}
			var r map[string]any
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				t.Fatal(err)
			}
			err := CheckTLSReport(r)
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("CheckTLSReport: %v, want %q", err, c.want)
			}
		})
	}
}
