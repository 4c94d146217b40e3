// Command cluster runs a three-node jetrelay cluster on this machine
// (loopback only) with a recording sink, for people to try it and for the
// soak run: scripts/cluster builds jetrelay and runs this. It is developer
// tooling on top of relay/clustertest, not product.
//
//	go run ./relay/devtools/cluster --jetrelay BIN [--dir DIR] [--soak N]
//
// Without --soak it prints the nodes' ports and a dev user's credentials
// and stays up until SIGINT/SIGTERM. With --soak N it runs the fault
// scenario (several leader kills, a rolling restart, quorum loss) under a
// load of about N messages, prints accepted/delivered/duplicates and the
// times measured, and exits 1 when anything was lost or a rule broken.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jetrelay/jetrelay/relay/clustertest"
)

type options struct {
	bin, dir string
	soak     int
	rate     float64
	rounds   int
	sinkPort string
	timeout  time.Duration
}

func main() {
	var o options
	fs := flag.NewFlagSet("cluster", flag.ExitOnError)
	fs.StringVar(&o.bin, "jetrelay", "", "jetrelay binary (required)")
	fs.StringVar(&o.dir, "dir", "", "working directory (default: a new temporary one, removed at exit)")
	fs.IntVar(&o.soak, "soak", 0, "run the soak with about this many messages (0: stay up until Ctrl-C)")
	fs.Float64Var(&o.rate, "rate", 40, "soak: messages per second")
	fs.IntVar(&o.rounds, "rounds", 3, "soak: kill -9 of the queue stream leader, this many times")
	fs.StringVar(&o.sinkPort, "sink-port", "0", "loopback port of the sink every message is routed to (0: any)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "soak: the whole run at most this long")
	_ = fs.Parse(os.Args[1:])
	if o.bin == "" || o.soak < 0 || o.rate <= 0 || o.rounds < 1 {
		fs.Usage()
		os.Exit(2)
	}
	os.Exit(run(o))
}

func run(o options) int {
	if o.dir == "" {
		d, err := os.MkdirTemp("", "jetrelay-cluster-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		o.dir = d
		defer os.RemoveAll(d)
	} else if err := os.MkdirAll(o.dir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sink, err := clustertest.StartSink(o.sinkPort)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		return 1
	}
	defer sink.Close()
	pass := fmt.Sprintf("dev-%d", time.Now().UnixNano()%1e9)
	if err := os.WriteFile(filepath.Join(o.dir, "dev.password"), []byte(pass+"\n"), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := clustertest.New(clustertest.Options{Bin: o.bin, Dir: o.dir, SinkAddr: sink.Addr, User: "dev", Pass: pass})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Stop(time.Minute)
	if err := start(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	printCluster(c, sink, o.dir)
	if o.soak > 0 {
		return soak(ctx, o, c, sink)
	}
	return stayUp(ctx, sink)
}

func start(ctx context.Context, c *clustertest.Cluster) error {
	if err := c.Start(); err != nil {
		return err
	}
	fmt.Println("starting three nodes; waiting for /readyz on each (the cluster elects its leaders)")
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return c.WaitReady(wctx)
}

func printCluster(c *clustertest.Cluster, sink *clustertest.Sink, dir string) {
	fmt.Printf("\n%-8s %-22s %-22s %-22s %-22s\n", "node", "submission (STARTTLS)", "admin (/readyz)", "NATS client", "NATS routes")
	for _, n := range c.Nodes {
		fmt.Printf("%-8s %-22s %-22s %-22s %-22s\n", n.Name, n.SubmitAddr, n.AdminAddr, n.ClientAddr, n.RouteAddr)
	}
	a := c.Nodes[0]
	fmt.Printf("\nsink (every recipient is routed here): %s\nconfigs, data and logs: %s/relay-*/\n", sink.Addr, dir)
	fmt.Printf("submission user: dev, password in %s/dev.password\n\n", dir)
	jr := c.Opts.Bin
	fmt.Printf("try:\n  %s send --config %s --user dev --password-file %s/dev.password --to you@example.net --insecure\n",
		jr, a.ConfigPath, dir)
	fmt.Printf("  %s cluster status --config %s\n  curl http://%s/readyz\n  kill -9 <pid of a node, below>\n\n",
		jr, a.ConfigPath, a.AdminAddr)
	for _, n := range c.Nodes {
		fmt.Printf("%s pid %d\n", n.Name, n.Pid())
	}
}

func stayUp(ctx context.Context, sink *clustertest.Sink) int {
	fmt.Println("\nup; Ctrl-C stops the cluster and removes a temporary directory")
	last := -1
	for {
		select {
		case <-ctx.Done():
			fmt.Printf("\nstopping; the sink received %d messages\n", sink.Total())
			return 0
		case <-time.After(5 * time.Second):
			if t := sink.Total(); t != last {
				fmt.Printf("[%s] sink: %d messages received\n", time.Now().Format("15:04:05"), t)
				last = t
			}
		}
	}
}

func soak(ctx context.Context, o options, c *clustertest.Cluster, sink *clustertest.Sink) int {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	logf := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	rep := (&clustertest.Scenario{C: c, Sink: sink, Logf: logf, Rate: o.rate, Rounds: o.rounds, Messages: o.soak,
		Workers: 12, DrainTimeout: 5 * time.Minute}).Run(ctx)
	fmt.Printf("\nsoak: sent %d, accepted %d, refused (4xx) %d, connection errors %d\n",
		rep.Sent, rep.Accepted, rep.Refused, rep.ConnErrors)
	fmt.Printf("delivered %d, not delivered %d, duplicates %d (bound %d for %d stops and kills), delivered without a 250 %d\n",
		rep.Delivered, rep.Lost, rep.Duplicates, rep.DupBound, rep.Downs, rep.UnacceptedDelivered)
	fmt.Printf("250s resumed after each kill: %v; after quorum returned: %v; longest reply wait: %v; "+
		"longest 250-to-delivery (outside the quorum loss): %v\n", rep.Resume, rep.QuorumResume, rep.MaxReply, rep.MaxDelivery)
	if len(rep.Problems) > 0 {
		fmt.Printf("\nFAILED: %d problems\n", len(rep.Problems))
		for _, p := range rep.Problems {
			fmt.Println("  " + p)
		}
		return 1
	}
	fmt.Println("\nsoak passed: every accepted message was delivered")
	return 0
}
