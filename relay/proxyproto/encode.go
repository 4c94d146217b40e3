package proxyproto

import (
	"encoding/binary"
	"strconv"
)

// AppendV1 appends h as a v1 text line (what a balancer sends; used by
// tests and load generators). A header without usable addresses is
// written as "PROXY UNKNOWN".
func AppendV1(b []byte, h Header) []byte {
	if _, ok := h.Client(); !ok {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	b = append(b, "PROXY "+h.Transport.String()+" "...)
	b = append(b, h.Source.Addr().String()+" "+h.Destination.Addr().String()+" "...)
	b = strconv.AppendUint(b, uint64(h.Source.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(h.Destination.Port()), 10)
	return append(b, "\r\n"...)
}

// AppendV2 appends h as a v2 binary header followed by tlvs, which must
// be well-formed TLVs (type, 2-byte length, value) and keep the payload
// within MaxV2Payload. Local headers carry no addresses.
func AppendV2(b []byte, h Header, tlvs []byte) []byte {
	b = append(b, v2Sig...)
	cmd, fam := byte(0x21), byte(0x00)
	var addrs []byte
	switch {
	case h.Command == Local:
		cmd = 0x20
	case h.Transport == TCP4:
		fam = 0x11
		addrs = append(addrs, h.Source.Addr().AsSlice()...)
		addrs = append(addrs, h.Destination.Addr().AsSlice()...)
	case h.Transport == TCP6:
		fam = 0x21
		s, d := h.Source.Addr().As16(), h.Destination.Addr().As16()
		addrs = append(append(addrs, s[:]...), d[:]...)
	}
	if fam != 0 {
		addrs = binary.BigEndian.AppendUint16(addrs, h.Source.Port())
		addrs = binary.BigEndian.AppendUint16(addrs, h.Destination.Port())
	}
	b = append(b, cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addrs)+len(tlvs)))
	b = append(b, addrs...)
	return append(b, tlvs...)
}
