package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newHCLog(l, "raft")
	h.SetLevel(hclog.Debug)
	h.Trace("hidden trace")
	h.Debug("dbg", "k", 1)
	h.Named("net").With("peer", "n2").Warn("slow")
	h.ResetNamed("x").Error("bad")
	h.StandardLogger(nil).Print("[WARN] memberlist: suspect n3")
	h.StandardLogger(nil).Print("[DEBUG] memberlist: ping")
	out := buf.String()
	for _, want := range []string{
		`level=DEBUG msg=dbg component=raft k=1`,
		`level=WARN msg=slow component=raft.net peer=n2`,
		`level=ERROR msg=bad component=x`,
		`level=WARN msg="memberlist: suspect n3" component=raft`,
		`level=DEBUG msg="memberlist: ping"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden trace") {
		t.Error("trace logged below the set level")
	}
	if !h.IsDebug() || h.IsTrace() || h.GetLevel() != hclog.Debug || h.Name() != "raft" {
		t.Error("level or name accessors wrong")
	}
	h.SetLevel(hclog.Error)
	if h.IsWarn() {
		t.Error("IsWarn after SetLevel(Error)")
	}
}
