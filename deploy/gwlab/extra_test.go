package gwlab

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"ikegw/cmd/api"
)

func TestParseActiveLoss(t *testing.T) {
	at := time.Date(2026, 11, 27, 9, 0, 37, 40e6, time.UTC)
	for _, tc := range []struct {
		line       string
		ok         bool
		to, reason string
	}{
		{`time=2026-11-27T09:00:37.040Z level=INFO msg="role: state" component=role from=active to=fencing reason="no quorum confirmation for 102ms (lease 100ms); VIPs released" term=2`,
			true, "fencing", "no quorum confirmation for 102ms (lease 100ms); VIPs released"},
		{`time=2026-11-27T09:00:37.040Z level=INFO msg="role: state" component=role from=active to=standby reason="leadership lost" term=3`,
			true, "standby", "leadership lost"},
		{`time=2026-11-27T09:00:37.040Z level=INFO msg="role: state" component=role from=fencing to=activating reason="quorum confirmed again" term=2`, false, "", ""},
		{`time=2026-11-27T09:00:37.040Z level=INFO msg="role: state" component=role from=activating to=active reason="takeover done" term=2`, false, "", ""},
		{`gc 128 @23.556s 7%: 0.057+6.6+0.19 ms clock, from=active msg="role: state"`, false, "", ""},
		{`time=yesterday level=INFO msg="role: state" component=role from=active to=fencing reason="x"`, false, "", ""},
	} {
		a, ok := parseActiveLoss(tc.line, "gw1")
		if ok != tc.ok {
			t.Errorf("parseActiveLoss(%q) ok = %v, want %v", tc.line, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		if a.Node != "gw1" || !a.At.Equal(at) || a.To != tc.to || a.Reason != tc.reason {
			t.Errorf("parseActiveLoss(%q) = %+v, want gw1 at %v to %q reason %q", tc.line, a, at, tc.to, tc.reason)
		}
	}
}

func TestActiveLossesReadsEveryDaemonLogSince(t *testing.T) {
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(logs, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	line := func(ts, to string) string {
		return `time=` + ts + ` level=INFO msg="role: state" component=role from=active to=` + to + ` reason="r" term=2` + "\n"
	}
	write("gw1-ikegwd-supervise.1.log", line("2026-11-27T09:00:01Z", "fencing")+"gc 1 @0.1s\n"+line("2026-11-27T09:00:05Z", "fencing"))
	write("gw2-ikegwd-supervise.6.log", line("2026-11-27T09:00:03Z", "standby"))
	write("peer-charon.5.log", line("2026-11-27T09:00:04Z", "fencing")) // not a daemon
	l := &Lab{dir: dir}
	got, err := l.ActiveLosses(time.Date(2026, 11, 27, 9, 0, 2, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Node != "gw2" || got[0].To != "standby" || got[1].Node != "gw1" || got[1].At.Second() != 5 {
		t.Fatalf("ActiveLosses = %v, want gw2 at :03 (standby), then gw1 at :05", got)
	}
}

// membersServer serves /v1/members with the given recorded active on a
// unix socket in dir and returns the socket's path.
func membersServer(t *testing.T, dir, name, active string) string {
	t.Helper()
	sock := filepath.Join(dir, name+".sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(api.Members{Members: []api.Member{}, Active: active})
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

func TestRecordedActiveOf(t *testing.T) {
	dir := t.TempDir()
	stale := membersServer(t, dir, "a", "gw1") // has not applied the new record yet
	none := membersServer(t, dir, "b", "")
	fresh := membersServer(t, dir, "c", "gw2")
	dead := filepath.Join(dir, "dead.sock") // nobody listens
	ctx := context.Background()
	for _, tc := range []struct {
		socks   []string
		not     string
		want    string
		wantErr bool
	}{
		{[]string{stale, fresh}, "gw1", "gw2", false}, // a lagging member does not hide the new active
		{[]string{dead, fresh}, "gw1", "gw2", false},  // nor does a dead one
		{[]string{stale, none}, "gw1", "", false},     // not recorded yet: wait
		{[]string{stale}, "", "gw1", false},           // the first wait: any active
		{[]string{dead}, "gw1", "", true},             // nobody answers: say why
		{nil, "gw1", "", false},
	} {
		got, err := recordedActiveOf(ctx, tc.socks, tc.not)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("recordedActiveOf(%v, not %q) = %q, %v; want %q, error %v", tc.socks, tc.not, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestRejoinPollScalesWithTheLab(t *testing.T) {
	if rejoinPoll(0) >= rejoinPoll(largeLab) || rejoinPoll(largeLab-1) != rejoinPoll(0) {
		t.Fatalf("rejoinPoll: small %v, large %v", rejoinPoll(0), rejoinPoll(largeLab))
	}
}
