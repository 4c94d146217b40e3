package domaincheck

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// checkEHLO checks the EHLO name's addresses and the reverse DNS of the
// outbound addresses (forward-confirmed reverse DNS: the PTR names the
// EHLO name, and the EHLO name resolves to the address). Without known
// outbound addresses the EHLO name's own public addresses stand in.
func (c *checker) checkEHLO() {
	h := c.o.Hostname
	if !strings.Contains(h, ".") {
		c.add(Finding{Check: CheckEHLOForward, Subject: h, Status: Fail,
			Detail: "the EHLO name is not a fully qualified domain name (RFC 5321 §4.1.1.1)",
			Fix:    "set hostname to the relay's public name, e.g. mail." + c.o.Domain})
		return
	}
	fwd, ok := c.forward(h)
	ips := c.o.IPs
	if len(ips) == 0 {
		for _, a := range fwd {
			if a.IsGlobalUnicast() && !a.IsPrivate() {
				ips = append(ips, a)
			}
		}
	}
	if ok {
		c.forwardMatches(h, fwd, ips)
	}
	for _, ip := range ips {
		c.reverse(h, ip)
	}
}

// forwardMatches adds the finding about h resolving to the outbound
// addresses ips.
func (c *checker) forwardMatches(h string, fwd, ips []netip.Addr) {
	text := make([]string, 0, len(fwd))
	for _, a := range fwd {
		text = append(text, a.String())
	}
	f := Finding{Check: CheckEHLOForward, Subject: h, Status: OK, Detail: "resolves to " + strings.Join(text, ", ")}
	var fixes []string
	for _, ip := range ips {
		if !slices.Contains(fwd, ip) {
			f.Status = Fail
			f.Detail += fmt.Sprintf("; does not resolve to the outbound address %s", ip)
			fixes = append(fixes, fmt.Sprintf("add %s. IN %s %s", h, addrType(ip), ip))
		}
	}
	f.Fix = strings.Join(fixes, "; ")
	c.add(f)
}

// forward looks h's addresses up, adding a finding when that fails.
func (c *checker) forward(h string) ([]netip.Addr, bool) {
	addrs, err := c.o.Resolver.LookupIPAddr(c.ctx, h)
	if err != nil {
		f := Finding{Check: CheckEHLOForward, Subject: h, Status: Fail, Detail: "lookup failed: " + err.Error(),
			Fix: "make the name servers of " + h + " answer"}
		if notFound(err) {
			f.Detail = "no A or AAAA record: receivers distrust an EHLO name that does not resolve"
			f.Fix = fmt.Sprintf("publish %s. IN A <the relay's public address>", h)
		}
		c.add(f)
		return nil, false
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, true
}

// reverse checks that ip's PTR names h.
func (c *checker) reverse(h string, ip netip.Addr) {
	f := Finding{Check: CheckEHLOReverse, Subject: ip.String(), Status: OK}
	fix := fmt.Sprintf("ask whoever owns %s (the hosting provider) to set its PTR record to %s", ip, h)
	names, err := c.o.Resolver.LookupAddr(c.ctx, ip.String())
	for i := range names {
		names[i] = normalize(names[i])
	}
	switch {
	case notFound(err):
		f.Status, f.Detail, f.Fix = Fail, "no PTR record: many receivers refuse mail from such addresses", fix
	case err != nil:
		f.Status, f.Detail, f.Fix = Fail, "lookup failed: "+err.Error(), fix
	case slices.Contains(names, h):
		f.Detail = "PTR " + h
	default:
		f.Status, f.Detail = Fail, "PTR "+strings.Join(names, ", ")+", not the EHLO name "+h
		f.Fix = fix + ", or set hostname: " + names[0] + " if that name resolves to " + ip.String()
	}
	c.add(f)
}

// checkBounceMX checks that the domain bounces go to accepts mail: the
// VERP domain, else the sender domain.
func (c *checker) checkBounceMX() {
	d := c.o.envelopeDomain()
	f := Finding{Check: CheckBounceMX, Subject: d, Status: OK}
	mxs, err := c.o.Resolver.LookupMX(c.ctx, d)
	switch {
	case err == nil && len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == ""):
		f.Status, f.Detail = Fail, "null MX (RFC 7505): "+d+" accepts no mail, so bounces to it are lost"
		f.Fix = "publish an MX for " + d + c.verpHint()
	case err == nil:
		hosts := make([]string, 0, len(mxs))
		for _, mx := range mxs {
			hosts = append(hosts, fmt.Sprintf("%d %s", mx.Pref, normalize(mx.Host)))
		}
		f.Detail = "MX " + strings.Join(hosts, ", ") + c.verpHint()
	case notFound(err):
		if _, aerr := c.o.Resolver.LookupIPAddr(c.ctx, d); aerr == nil {
			f.Status, f.Detail = Warn, "no MX: bounces go to the address of "+d+" (implicit MX, RFC 5321 §5.1)"
		} else {
			f.Status, f.Detail = Fail, "no MX and no address: bounces to "+d+" are lost"
		}
		f.Fix = "publish " + d + ". IN MX 10 <a host that accepts its mail>" + c.verpHint()
	default:
		f.Status, f.Detail, f.Fix = Fail, "lookup failed: "+err.Error(), "make the name servers of "+d+" answer"
	}
	c.add(f)
}

// verpHint says where VERP bounces must arrive.
func (c *checker) verpHint() string {
	if c.o.VERPDomain == "" {
		return ""
	}
	return " (VERP bounces must reach this relay's bounces.listen)"
}

// addrType is the record type of ip.
func addrType(ip netip.Addr) string {
	if ip.Is4() {
		return "A"
	}
	return "AAAA"
}
