package config

import "strings"

// bounces.fbl_address (issue 18): the address mailbox providers' feedback
// loops send ARF reports (RFC 5965) to. The bounce intake (bounces.listen)
// accepts it besides the VERP addresses; "" = none (reports still arrive
// at the VERP return path).

// validateFBL checks bounces.fbl_address: one plain address, taken at the
// intake, so bounces.listen must be set.
func (c *Config) validateFBL(ps *problems) {
	a := c.Bounces.FBLAddress
	if a == "" {
		return
	}
	at := strings.LastIndexByte(a, '@')
	if at < 1 || at == len(a)-1 || strings.ContainsAny(a, " \t<>,;\"") || len(a) > 254 {
		ps.add("bounces.fbl_address", "%q is not an address (local@domain)", a)
	}
	if c.Bounces.Listen == "" {
		ps.add("bounces.fbl_address", "needs bounces.listen: the bounce intake receives the reports")
	}
}
