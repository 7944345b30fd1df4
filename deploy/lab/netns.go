package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// NS is a network namespace created by a Lab. Its loopback is up.
type NS struct {
	lab   *Lab
	short string // the name given to NewNS
	name  string // the full, unique name under /run/netns
}

// Name is the namespace's full unique name (as `ip netns` shows it).
func (ns *NS) Name() string { return ns.name }

// String returns the full name.
func (ns *NS) String() string { return ns.name }

// Lab returns the lab that owns the namespace.
func (ns *NS) Lab() *Lab { return ns.lab }

// NewNS creates a namespace named Tag()+name with lo up. name is a short
// role such as "gw1" or "peer".
func (l *Lab) NewNS(ctx context.Context, name string) (*NS, error) {
	if err := checkName("namespace name", name, 32); err != nil {
		return nil, err
	}
	ns := &NS{lab: l, short: name, name: l.tag + name}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	// Registered before creation so Close removes a half-made namespace.
	l.nss = append(l.nss, ns)
	l.mu.Unlock()
	if _, err := runCmd(ctx, "", nil, "ip", "netns", "add", ns.name); err != nil {
		return nil, err
	}
	if _, err := ns.Run(ctx, "ip", "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	l.log.Info("netns created", "netns", ns.name)
	return ns, nil
}

// Run runs a command inside the namespace and returns its combined output;
// a failure is a *CmdError with the output.
func (ns *NS) Run(ctx context.Context, name string, args ...string) (string, error) {
	return runCmd(ctx, ns.name, nil, name, args...)
}

// ip runs `ip -n NS args...` (no exec into the namespace needed).
func (ns *NS) ip(ctx context.Context, args ...string) (string, error) {
	return runCmd(ctx, "", nil, "ip", append([]string{"-n", ns.name}, args...)...)
}

// Veth connects a (interface aIf) and b (interface bIf) with a veth pair
// created directly inside the two namespaces, and brings both ends up.
// Interface names must fit IFNAMSIZ (at most 15 characters).
func (l *Lab) Veth(ctx context.Context, a *NS, aIf string, b *NS, bIf string) error {
	if err := checkName("interface name", aIf, 15); err != nil {
		return err
	}
	if err := checkName("interface name", bIf, 15); err != nil {
		return err
	}
	if _, err := runCmd(ctx, "", nil, "ip", "link", "add", aIf, "netns", a.name, "type", "veth", "peer", "name", bIf, "netns", b.name); err != nil {
		return err
	}
	if err := a.SetLink(ctx, aIf, true); err != nil {
		return err
	}
	return b.SetLink(ctx, bIf, true)
}

// SetLink brings an interface up or down (down models a cut cable).
func (ns *NS) SetLink(ctx context.Context, ifname string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	_, err := ns.ip(ctx, "link", "set", "dev", ifname, state)
	return err
}

// AddAddr assigns an address with its prefix length, e.g. 192.0.2.1/24 or
// 2001:db8::1/64, to an interface. IPv6 addresses skip duplicate address
// detection so they are usable at once.
func (ns *NS) AddAddr(ctx context.Context, ifname string, addr netip.Prefix) error {
	if !addr.IsValid() {
		return fmt.Errorf("lab: netns %s: AddAddr on %s: invalid prefix", ns.name, ifname)
	}
	args := []string{"addr", "add", addr.String(), "dev", ifname}
	if addr.Addr().Is6() {
		args = append(args, "nodad")
	}
	_, err := ns.ip(ctx, args...)
	return err
}

// DelAddr removes an address from an interface.
func (ns *NS) DelAddr(ctx context.Context, ifname string, addr netip.Prefix) error {
	_, err := ns.ip(ctx, "addr", "del", addr.String(), "dev", ifname)
	return err
}

// AddLoopbackAddr puts the first host address of prefix (10.1.0.0/24 →
// 10.1.0.1) on lo as a host route (/32 or /128) and returns it.
// strongSwan's kernel-libipsec before 5.9.12 needs the peer to own an
// address inside its local traffic selector; this gives it one, and it is
// the address to ping from and to through the tunnel.
func (ns *NS) AddLoopbackAddr(ctx context.Context, prefix netip.Prefix) (netip.Addr, error) {
	if !prefix.IsValid() {
		return netip.Addr{}, fmt.Errorf("lab: netns %s: AddLoopbackAddr: invalid prefix", ns.name)
	}
	a := prefix.Masked().Addr()
	if prefix.Bits() < a.BitLen() {
		a = a.Next()
	}
	if err := ns.AddAddr(ctx, "lo", netip.PrefixFrom(a, a.BitLen())); err != nil {
		return netip.Addr{}, err
	}
	return a, nil
}

// AddRoute adds a route to dst via gateway (an invalid via means a device
// route on dev; dev may be empty when via is given).
func (ns *NS) AddRoute(ctx context.Context, dst netip.Prefix, via netip.Addr, dev string) error {
	if !dst.IsValid() {
		return fmt.Errorf("lab: netns %s: AddRoute: invalid destination", ns.name)
	}
	args := []string{"route", "add", dst.String()}
	if via.IsValid() {
		args = append(args, "via", via.String())
	}
	if dev != "" {
		args = append(args, "dev", dev)
	}
	if !via.IsValid() && dev == "" {
		return fmt.Errorf("lab: netns %s: AddRoute %s: need a gateway or a device", ns.name, dst)
	}
	_, err := ns.ip(ctx, args...)
	return err
}

// Sysctl sets a sysctl inside the namespace (net.* keys are per namespace),
// e.g. Sysctl(ctx, "net.ipv4.ip_forward", "1").
func (ns *NS) Sysctl(ctx context.Context, key, value string) error {
	if err := checkName("sysctl key", key, 200); err != nil {
		return err
	}
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	_, err := ns.Run(ctx, "sh", "-c", `printf '%s\n' "$2" > "$1"`, "sh", p, value)
	return err
}

// Bridge is a Linux bridge living in a namespace of its own; namespaces
// join it through veth pairs.
type Bridge struct {
	NS    *NS
	Dev   string // the bridge device inside NS ("br0")
	ports int
}

// NewBridge creates a namespace named name holding bridge device br0, up.
func (l *Lab) NewBridge(ctx context.Context, name string) (*Bridge, error) {
	ns, err := l.NewNS(ctx, name)
	if err != nil {
		return nil, err
	}
	if _, err := ns.ip(ctx, "link", "add", "br0", "type", "bridge"); err != nil {
		return nil, err
	}
	if err := ns.SetLink(ctx, "br0", true); err != nil {
		return nil, err
	}
	return &Bridge{NS: ns, Dev: "br0"}, nil
}

// Attach connects ns to the bridge: interface ifname inside ns, the other
// end (named "p<N>") enslaved to the bridge. Both ends are up. It returns
// the bridge port's name (take it down to cut ns off the segment).
func (b *Bridge) Attach(ctx context.Context, ns *NS, ifname string) (string, error) {
	b.NS.lab.mu.Lock()
	b.ports++
	port := fmt.Sprintf("p%d", b.ports)
	b.NS.lab.mu.Unlock()
	if err := b.NS.lab.Veth(ctx, ns, ifname, b.NS, port); err != nil {
		return "", err
	}
	if _, err := b.NS.ip(ctx, "link", "set", "dev", port, "master", b.Dev); err != nil {
		return "", err
	}
	return port, nil
}

// Do runs fn on an OS thread that has entered the namespace (for sockets
// that must be created inside it: a socket keeps its namespace after the
// thread leaves). fn must not start goroutines that expect the namespace.
// If the thread cannot return to its original namespace it is discarded.
func (ns *NS) Do(fn func() error) error {
	type result struct{ err error }
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		restored := false
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			} // else: the goroutine exits locked and the runtime kills the thread
		}()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			ch <- result{fmt.Errorf("lab: netns %s: opening own namespace: %w", ns.name, err)}
			restored = true
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join(netnsDir, ns.name))
		if err != nil {
			ch <- result{fmt.Errorf("lab: netns %s: %w", ns.name, err)}
			restored = true
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{fmt.Errorf("lab: netns %s: setns: %w", ns.name, err)}
			restored = true
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			restored = true
		}
		ch <- result{ferr}
	}()
	return (<-ch).err
}

// exists reports whether the namespace is still there.
func (ns *NS) exists() bool {
	_, err := os.Stat(filepath.Join(netnsDir, ns.name))
	return err == nil
}

// WriteFile writes data to name inside the lab directory with mode 0600
// (configs may hold secrets) and returns its path, e.g. for a config file
// to pass to a process started with NS.Start.
func (l *Lab) WriteFile(name string, data []byte) (string, error) {
	if err := checkName("file name", name, 128); err != nil {
		return "", err
	}
	if name == "." || name == ".." {
		return "", fmt.Errorf("%w: file name %q", ErrBadName, name)
	}
	p := filepath.Join(l.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	return p, nil
}
