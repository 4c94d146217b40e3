package submit

// Pauses answers whether a user's sending is paused (relay/guard's
// bounce-rate guard) and why ("bounce rate 11.2% over 24h"). It is asked
// at every MAIL, so it must answer from memory.
type Pauses interface {
	Paused(user string) (reason string, paused bool)
}

// pausesBox lets SetPauses install the check while sessions run.
type pausesBox struct{ p Pauses }

// SetPauses installs the pause check (cmd/jetrelay's statswire does, after
// New); nil removes it.
func (s *Server) SetPauses(p Pauses) { s.pauses.Store(&pausesBox{p: p}) }

// pausedErr is MAIL's refusal of a paused user (451 4.7.1: a policy
// refusal the client may retry later, RFC 3463 §3.8), nil otherwise.
func (s *session) pausedErr() error {
	b := s.srv.pauses.Load()
	if b == nil || b.p == nil {
		return nil
	}
	if reason, paused := b.p.Paused(s.user); paused {
		return pausedReply(reason)
	}
	return nil
}
