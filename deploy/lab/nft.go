package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Fault is a set of nftables drop rules in one namespace, removed by Remove
// or when the lab closes. The rules sit in tables of their own (inet for
// traffic the namespace sends, receives or routes; bridge for traffic its
// bridges forward), so they never disturb other rules.
type Fault struct {
	ns      *NS
	table   string
	mu      sync.Mutex
	removed bool
}

// DropAll drops every packet between a and b, both directions, in ns
// (sent, received, routed or bridged there). a and b must be the same
// family.
func (ns *NS) DropAll(ctx context.Context, a, b netip.Addr) (*Fault, error) {
	return ns.drop(ctx, a, b, 100)
}

// DropPercent drops about percent % of the packets between a and b, both
// directions, chosen at random per packet (nftables numgen), in ns.
func (ns *NS) DropPercent(ctx context.Context, a, b netip.Addr, percent int) (*Fault, error) {
	if percent < 1 || percent > 100 {
		return nil, fmt.Errorf("lab: netns %s: drop percent %d: want 1..100", ns.name, percent)
	}
	return ns.drop(ctx, a, b, percent)
}

func (ns *NS) drop(ctx context.Context, a, b netip.Addr, percent int) (*Fault, error) {
	if !a.IsValid() || !b.IsValid() || a.Is4() != b.Is4() {
		return nil, fmt.Errorf("lab: netns %s: drop between %v and %v: need two valid addresses of one family", ns.name, a, b)
	}
	var rb [4]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return nil, fmt.Errorf("lab: random: %w", err)
	}
	table := "lab_fault_" + hex.EncodeToString(rb[:])
	fam := "ip"
	if a.Is6() {
		fam = "ip6"
	}
	cond := ""
	if percent < 100 {
		cond = fmt.Sprintf(" numgen random mod 100 < %d", percent)
	}
	rules := fmt.Sprintf("%[1]s saddr %[2]s %[1]s daddr %[3]s%[4]s counter drop\n%[1]s saddr %[3]s %[1]s daddr %[2]s%[4]s counter drop\n", fam, a, b, cond)
	var sb strings.Builder
	fmt.Fprintf(&sb, "table inet %s {\n", table)
	for _, hook := range []string{"input", "output", "forward"} {
		fmt.Fprintf(&sb, "chain c_%s {\ntype filter hook %s priority -10; policy accept;\n%s}\n", hook, hook, rules)
	}
	fmt.Fprintf(&sb, "}\ntable bridge %s {\nchain c_forward {\ntype filter hook forward priority -10; policy accept;\n%s}\n}\n", table, rules)
	if err := ns.nft(ctx, sb.String()); err != nil {
		return nil, err
	}
	f := &Fault{ns: ns, table: table}
	l := ns.lab
	l.mu.Lock()
	closed := l.closed
	if !closed {
		l.faults = append(l.faults, f)
	}
	l.mu.Unlock()
	if closed {
		_ = f.Remove()
		return nil, ErrClosed
	}
	l.log.Info("fault added", "netns", ns.name, "table", table, "a", a, "b", b, "percent", percent)
	return f, nil
}

// nft feeds a script to `nft -f -` inside the namespace.
func (ns *NS) nft(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return &CmdError{NS: ns.name, Args: []string{"nft", "-f", "-"}, Output: strings.TrimSpace(string(out)) + "\nscript:\n" + script, Err: err}
	}
	return nil
}

// Dropped returns how many packets the fault's rules dropped so far.
func (f *Fault) Dropped(ctx context.Context) (uint64, error) {
	var total uint64
	for _, fam := range []string{"inet", "bridge"} {
		out, err := f.ns.Run(ctx, "nft", "list", "table", fam, f.table)
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(out, "\n") {
			fields := strings.Fields(line)
			for i := 0; i+1 < len(fields); i++ {
				if fields[i] == "packets" {
					var n uint64
					if _, err := fmt.Sscan(fields[i+1], &n); err != nil {
						return 0, fmt.Errorf("lab: netns %s: nft counter %q: %w", f.ns.name, fields[i+1], err)
					}
					total += n
				}
			}
		}
	}
	return total, nil
}

// Remove deletes the fault's rules (healing the partition). Removing twice
// is not an error; neither is removing after the namespace is gone.
func (f *Fault) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.removed {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !f.ns.exists() {
		f.removed = true
		return nil
	}
	if err := f.ns.nft(ctx, fmt.Sprintf("delete table inet %s\ndelete table bridge %s\n", f.table, f.table)); err != nil {
		return err
	}
	f.removed = true
	return nil
}
