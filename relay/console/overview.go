package console

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jetrelay/jetrelay/relay/stats"
)

// Stats is what the Overview needs from relay/stats (*stats.Store): the
// cluster-wide counts, not one node's.
type Stats interface {
	// Series returns q's counts in steps of step, oldest first.
	Series(ctx context.Context, q stats.Query, step time.Duration) ([]stats.Point, error)
}

// Chart geometry (SVG user units).
const (
	chartW   = 600
	chartH   = 160
	chartPad = 4
)

// chart is one SVG line chart of a Series.
type chart struct {
	Title      string
	W, H       int
	Lines      []chartLine
	Max        int64
	From, To   string
	Err        string
	ViewBox    string
	GridY      []int
	StepLegend string
}

// chartLine is one count over the chart's span.
type chartLine struct {
	Name   string // accepted, delivered, deferred, bounced
	Points string // SVG polyline points
	Total  int64
}

// seriesDef names the counts drawn, in legend order.
var seriesDef = []struct {
	name string
	get  func(stats.Counts) int64
}{
	{"accepted", func(c stats.Counts) int64 { return c.Accepted }},
	{"delivered", func(c stats.Counts) int64 { return c.Delivered }},
	{"deferred", func(c stats.Counts) int64 { return c.Deferred }},
	{"bounced", func(c stats.Counts) int64 { return c.Bounced }},
}

// overview draws the last hour (per minute) and the last day (per 15
// minutes) of the cluster's counts.
func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) {
	now := c.o.Now()
	var charts []chart
	for _, span := range []struct {
		title      string
		span, step time.Duration
	}{{"Last hour", time.Hour, time.Minute}, {"Last day", 24 * time.Hour, 15 * time.Minute}} {
		ch := chart{Title: span.title}
		if c.o.Stats == nil {
			ch.Err = "cluster-wide counts are not available on this node"
			charts = append(charts, ch)
			continue
		}
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		pts, err := c.o.Stats.Series(ctx, stats.Query{Since: now.Add(-span.span), Until: now}, span.step)
		cancel()
		if err != nil {
			ch.Err = "counts unavailable: " + err.Error()
		} else {
			ch = drawChart(span.title, pts)
			ch.StepLegend = "per " + strings.TrimSuffix(brief(span.step), " ago")
		}
		charts = append(charts, ch)
	}
	c.render(w, http.StatusOK, "overview", newPage(s, "Overview", "overview", charts))
}

// drawChart scales pts into polylines, 0 at the bottom, the largest count
// at the top.
func drawChart(title string, pts []stats.Point) chart {
	ch := chart{Title: title, W: chartW, H: chartH, ViewBox: fmt.Sprintf("0 0 %d %d", chartW, chartH)}
	if len(pts) == 0 {
		ch.Err = "no data"
		return ch
	}
	ch.From, ch.To = when(pts[0].Start), when(pts[len(pts)-1].Start)
	for _, p := range pts {
		for _, d := range seriesDef {
			ch.Max = max(ch.Max, d.get(p.Counts))
		}
	}
	top := max(ch.Max, 1)
	dx := float64(chartW-2*chartPad) / float64(max(len(pts)-1, 1))
	for _, d := range seriesDef {
		var b strings.Builder
		l := chartLine{Name: d.name}
		for i, p := range pts {
			v := d.get(p.Counts)
			l.Total += v
			x := chartPad + float64(i)*dx
			y := float64(chartH-chartPad) - float64(v)/float64(top)*float64(chartH-2*chartPad)
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.FormatFloat(x, 'f', 1, 64) + "," + strconv.FormatFloat(y, 'f', 1, 64))
		}
		l.Points = b.String()
		ch.Lines = append(ch.Lines, l)
	}
	for i := 1; i < 4; i++ {
		ch.GridY = append(ch.GridY, chartH*i/4)
	}
	return ch
}
