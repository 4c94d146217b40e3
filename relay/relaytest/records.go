package relaytest

import (
	"net"
	"strings"

	"github.com/miekg/dns"
)

// maxCharString is the longest character-string of a TXT record
// (RFC 1035 §3.3: one length octet).
const maxCharString = 255

// AddTXTRecords adds TXT records for name, one per string; a string
// longer than 255 octets is served as several character-strings, as a
// zone file's long DKIM record is. (AddTXT adds one record of given
// character-strings.)
func (z *Zone) AddTXTRecords(name string, txts ...string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, t := range txts {
		z.TXT[key(name)] = append(z.TXT[key(name)], txtStrings(t))
	}
}

// AddPTR adds a PTR record naming host for the address ip ("192.0.2.1",
// "2001:db8::1"), at its reverse name (in-addr.arpa or ip6.arpa).
func (z *Zone) AddPTR(ip, host string) {
	rev, err := dns.ReverseAddr(ip)
	if err != nil {
		panic("relaytest: AddPTR: " + err.Error()) // a test bug, not input
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	z.PTR[key(rev)] = append(z.PTR[key(rev)], strings.TrimSuffix(host, "."))
}

// txtStrings splits s into character-strings of at most 255 octets.
func txtStrings(s string) []string {
	out := []string{}
	for len(s) > maxCharString {
		out = append(out, s[:maxCharString])
		s = s[maxCharString:]
	}
	return append(out, s)
}

// truncateUDP cuts an answer to what the client said it can take over UDP
// (its EDNS0 size, else 512 octets, RFC 6891 §6.2.5) and sets TC, as a
// real server does, so that the client retries over TCP.
func truncateUDP(w dns.ResponseWriter, r, m *dns.Msg) {
	if _, udp := w.LocalAddr().(*net.UDPAddr); !udp {
		return
	}
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
	}
	m.Truncate(size)
}

// SetTXTRecords replaces name's TXT records with one record per string
// (split as AddTXTRecords does); none removes them.
func (z *Zone) SetTXTRecords(name string, txts ...string) {
	z.mu.Lock()
	delete(z.TXT, key(name))
	z.mu.Unlock()
	z.AddTXTRecords(name, txts...)
}
