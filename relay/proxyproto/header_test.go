package proxyproto

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func v2(cmd, fam byte, payload []byte) []byte {
	b := append([]byte(nil), v2Sig...)
	b = append(b, cmd, fam, byte(len(payload)>>8), byte(len(payload)))
	return append(b, payload...)
}

func TestParseValid(t *testing.T) {
	tcp4 := Header{Version: 1, Transport: TCP4, Source: ap("192.0.2.10:40000"), Destination: ap("198.51.100.1:587")}
	tcp6 := Header{Version: 1, Transport: TCP6, Source: ap("[2001:db8::10]:65535"), Destination: ap("[2001:db8::1]:0")}
	v2tcp4 := tcp4
	v2tcp4.Version = 2
	v2tcp6 := tcp6
	v2tcp6.Version = 2
	addrs4 := AppendV2(nil, v2tcp4, nil)[16:]
	tlv := []byte{0x04, 0x00, 0x03, 'a', 'b', 'c'} // PP2_TYPE_NOOP
	cases := []struct {
		name string
		in   []byte
		want Header
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 587\r\n"), tcp4},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::10 2001:db8::1 65535 0\r\n"), tcp6},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1}},
		{"v1 UNKNOWN with anything", []byte("PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 1 1\r\n"), Header{Version: 1}},
		{"v1 longest line", []byte("PROXY UNKNOWN " + strings.Repeat("x", MaxV1Line-16) + "\r\n"), Header{Version: 1}},
		{"v2 TCP4", AppendV2(nil, v2tcp4, nil), v2tcp4},
		{"v2 TCP6", AppendV2(nil, v2tcp6, nil), v2tcp6},
		{"v2 TCP4 with TLV", AppendV2(nil, v2tcp4, tlv), v2tcp4},
		{"v2 LOCAL", AppendV2(nil, Header{Version: 2, Command: Local}, nil), Header{Version: 2, Command: Local}},
		{"v2 LOCAL with family and payload", v2(0x20, 0x11, make([]byte, 12)), Header{Version: 2, Command: Local}},
		{"v2 PROXY AF_UNSPEC", v2(0x21, 0x00, nil), Header{Version: 2}},
		{"v2 largest payload", v2(0x21, 0x11, append(addrs4, make([]byte, MaxV2Payload-12)...)), v2tcp4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := append(append([]byte(nil), tc.in...), "EHLO x\r\n"...)
			h, n, err := Parse(in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if h != tc.want || n != len(tc.in) {
				t.Fatalf("Parse(%q) = %+v, %d; want %+v, %d", tc.in, h, n, tc.want, len(tc.in))
			}
			for i := range len(tc.in) { // every proper prefix asks for more
				if _, _, err := Parse(tc.in[:i]); !errors.Is(err, ErrIncomplete) {
					t.Fatalf("Parse of the first %d bytes: %v, want ErrIncomplete", i, err)
				}
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	good4 := AppendV2(nil, Header{Version: 2, Transport: TCP4, Source: ap("192.0.2.1:1"),
		Destination: ap("192.0.2.2:2")}, nil)
	badVersion := bytes.Clone(good4)
	badVersion[12] = 0x11
	cases := []struct{ name, in string }{
		{"SMTP instead", "EHLO client.test\r\n"},
		{"TLS instead", "\x16\x03\x01\x02\x00"},
		{"lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"},
		{"v1 too long", "PROXY UNKNOWN " + strings.Repeat("x", MaxV1Line)},
		{"v1 longer than 107 with CRLF", "PROXY UNKNOWN " + strings.Repeat("x", MaxV1Line-15) + "\r\n"},
		{"v1 bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"},
		{"v1 bare CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"},
		{"v1 unknown protocol", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"},
		{"v1 too few fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"},
		{"v1 double space", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"},
		{"v1 TCP4 with IPv6", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n"},
		{"v1 TCP6 with IPv4", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n"},
		{"v1 zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"},
		{"v1 leading zero address", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"},
		{"v1 port too big", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"},
		{"v1 port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"},
		{"v1 port sign", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"},
		{"v1 host name", "PROXY TCP4 client.test 5.6.7.8 1 2\r\n"},
		{"v2 version 1", string(badVersion)},
		{"v2 command 2", string(v2(0x22, 0x11, make([]byte, 12)))},
		{"v2 UDP", string(v2(0x21, 0x12, make([]byte, 12)))},
		{"v2 UNIX", string(v2(0x21, 0x31, make([]byte, 216)))},
		{"v2 bad family", string(v2(0x21, 0x41, make([]byte, 12)))},
		{"v2 short TCP4 block", string(v2(0x21, 0x11, make([]byte, 11)))},
		{"v2 short TCP6 block", string(v2(0x21, 0x21, make([]byte, 35)))},
		{"v2 payload over the bound", string(v2(0x21, 0x11, nil)[:14]) + "\x08\x01"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.in))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) = %v, want an ErrInvalid error", tc.in, err)
			}
		})
	}
}

func TestAppendV1RoundTrip(t *testing.T) {
	for _, h := range []Header{
		{Version: 1, Transport: TCP4, Source: ap("192.0.2.10:1"), Destination: ap("192.0.2.1:587")},
		{Version: 1, Transport: TCP6, Source: ap("[2001:db8::a]:2"), Destination: ap("[::1]:465")},
		{Version: 1},
	} {
		b := AppendV1(nil, h)
		got, n, err := Parse(b)
		if err != nil || got != h || n != len(b) {
			t.Fatalf("Parse(AppendV1(%+v)) = %+v, %d, %v", h, got, n, err)
		}
	}
}
