package main

import (
	"context"
	"fmt"

	"github.com/jetrelay/jetrelay/relay/config"
	"github.com/jetrelay/jetrelay/relay/webhooks"
)

// webhookHooks turns the config's webhooks into the senders' settings,
// reading each secret file (the step of a reload that can fail).
func webhookHooks(cfg *config.Config) ([]webhooks.Hook, error) {
	out := make([]webhooks.Hook, 0, len(cfg.Webhooks))
	for _, w := range cfg.Webhooks {
		h, err := webhookHook(w)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// webhookHook is one webhook with its secret read.
func webhookHook(w config.Webhook) (webhooks.Hook, error) {
	secret, err := config.ReadWebhookSecret(w.SecretFile)
	if err != nil {
		return webhooks.Hook{}, fmt.Errorf("webhook %s: %w", w.Name, err)
	}
	return webhooks.Hook{
		Name: w.Name, URL: w.URL, Types: w.Events, Users: w.Users, Secret: secret,
		BatchMax: w.Batch.Max, BatchWait: w.Batch.Wait.D(), MaxAge: w.Retry.MaxAge.D(), Timeout: w.Timeout.D(),
	}, nil
}

// startWebhooks opens the status bucket (waiting while JetStream is not
// ready), registers the webhook metrics and starts a sender per webhook.
// The manager runs even without webhooks, so a reload can add some.
func (r *relay) startWebhooks(ctx context.Context) error {
	hooks, err := webhookHooks(r.cfg)
	if err != nil {
		return err
	}
	var o webhooks.Options
	err = r.q.Await(ctx, "bucket "+webhooks.Bucket, func(ctx context.Context) error {
		var err error
		o.KV, err = webhooks.OpenBucket(ctx, r.q.JetStream(), r.q.Replicas())
		return err
	})
	if err != nil {
		return err
	}
	if o.Metrics, err = webhooks.NewMetrics(r.metrics.Registry()); err != nil {
		return fmt.Errorf("webhooks: metrics: %w", err)
	}
	o.JetStream, o.Logger, o.Node = r.q.JetStream(), r.log, shapingNode(r.cfg)
	r.webhooks = webhooks.NewManager(o)
	r.webhooks.Apply(hooks)
	return nil
}

// closeWebhooks stops the senders (their batches in flight go back to the
// consumer at once).
func (r *relay) closeWebhooks() {
	if r.webhooks != nil {
		r.webhooks.Close()
	}
}
