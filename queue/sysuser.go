package queue

import "github.com/nats-io/nats-server/v2/server"

// SystemUser is the embedded server's monitoring user. It lives in the
// NATS system account, so it can ask every server of the cluster for its
// status ($SYS.REQ.SERVER.PING.VARZ, ROUTEZ, JSZ: names, addresses, route
// round trips, the JetStream meta group), and may do nothing else: it
// publishes only those requests and subscribes only to its inboxes.
// `jetrelay cluster status` and /metrics use it; its password is the
// embedded server's (data_dir/nats.password).
const SystemUser = "jetrelay-sys"

// SystemPingSubjects are the subjects SystemUser may publish to.
const SystemPingSubjects = "$SYS.REQ.SERVER.PING.*"

// EmbeddedAuth sets so's users and accounts: EmbeddedUser in the global
// account (the one with JetStream, where the relay's streams live) and
// SystemUser in the system account, both with password pass.
func EmbeddedAuth(so *server.Options, pass string) {
	sys := server.NewAccount(server.DEFAULT_SYSTEM_ACCOUNT)
	so.Accounts = append(so.Accounts, sys)
	so.SystemAccount = sys.Name
	so.Users = append(so.Users,
		&server.User{Username: EmbeddedUser, Password: pass},
		&server.User{Username: SystemUser, Password: pass, Account: sys, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{SystemPingSubjects}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}},
	)
}
