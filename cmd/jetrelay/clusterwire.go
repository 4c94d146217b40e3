package main

import (
	"github.com/jetrelay/jetrelay/queue"
	"github.com/jetrelay/jetrelay/relay/clusterview"
	"github.com/nats-io/nats.go"
)

// clusterView is the cluster view /metrics shows for r: the relay's own
// queue connection and, with the embedded server, its system user
// connected in-process (closed when the embedded server shuts down). On an
// external NATS the nodes are the streams' members (no system access).
func (r *relay) clusterView() *clusterview.Options {
	var sys *nats.Conn
	if ns := r.q.Embedded(); ns != nil {
		pass, err := queue.EnsurePassword(r.cfg.DataDir)
		if err == nil {
			sys, err = nats.Connect("", nats.InProcessServer(ns), nats.UserInfo(queue.SystemUser, pass),
				nats.Name("jetrelay metrics (system)"), nats.MaxReconnects(0))
		}
		if err != nil {
			r.log.Warn().Err(err).Str("event", "cluster_view_degraded").
				Msg("no system account access: cluster metrics show the streams' members only")
			sys = nil
		}
	}
	o := clusterview.ForQueue(r.q, sys)
	return &o
}
