package userspace

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inLabNS runs fn with the calling goroutine's thread in n's namespace
// (sockets fn creates stay there).
func inLabNS(t *testing.T, n *nsNode, fn func() error) {
	t.Helper()
	ns, err := netns.GetFromPath(n.path())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := inNetNS(ns, fn); err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
}

// snmpCounter reads one counter of /proc/net/snmp in n's namespace
// (section "Udp" or "Tcp", field e.g. "InCsumErrors").
func snmpCounter(t *testing.T, n *nsNode, section, field string) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", n.name, "cat", "/proc/net/snmp").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: /proc/net/snmp: %v\n%s", n.name, err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != section+":" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i := range names {
			if names[i] == field && i < len(f) {
				v, _ := strconv.Atoi(f[i])
				return v
			}
		}
	}
	t.Fatalf("%s: no %s %s in /proc/net/snmp", n.name, section, field)
	return 0
}

// kernelAtLeast tells whether the running kernel's version is at least
// major.minor.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var ma, mi int
	if _, err := fmt.Sscanf(rel, "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", rel, err)
	}
	return ma > major || ma == major && mi >= minor
}

// batchUDPSender is udpSender with SendESPBatch (one write per packet),
// remembering the largest batch the engine handed it.
type batchUDPSender struct {
	udpSender
	largest atomic.Int64
}

func (s *batchUDPSender) SendESPBatch(pkts [][]byte, dsts []netip.AddrPort) (int, error) {
	if n := int64(len(pkts)); n > s.largest.Load() {
		s.largest.Store(n) // one caller: the engine's read loop
	}
	for i, p := range pkts {
		if err := s.SendESP(p, dsts[i]); err != nil {
			return i, err
		}
	}
	return len(pkts), nil
}

// TestNetNSBulkTCPAndUDP sends a TCP stream and UDP datagrams through two
// engines on real TUN devices, so the kernel hands the reader TSO
// super-packets (split by splitVnet), UDP datagrams whose checksum is
// left to us (NEEDS_CSUM), USO super-packets (UDP_SEGMENT on the sending
// socket), and queues of datagrams read several per wakeup. Every byte
// must arrive intact, and the receiving kernel must count no checksum
// errors.
func TestNetNSBulkTCPAndUDP(t *testing.T) {
	a, b := newLab(t, true)
	ca, cb := pairFor(true)
	sender := &batchUDPSender{udpSender: udpSender{a.conn}}
	ea, err := New(Config{Sender: sender, NetNSPath: a.path(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ea.Close() })
	if err := ea.InstallChild(context.Background(), ca); err != nil {
		t.Fatal(err)
	}
	a.engine.Store(ea)
	eb := b.start(t, cb)

	t.Run("tcp", func(t *testing.T) {
		var ln *net.TCPListener
		inLabNS(t, b, func() (err error) {
			ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: b.inner.AsSlice()})
			return err
		})
		defer ln.Close()
		const size = 8 << 20
		data := make([]byte, size)
		for i := 0; i < size; i += 32 {
			s := sha256.Sum256(binary.BigEndian.AppendUint32(nil, uint32(i)))
			copy(data[i:], s[:])
		}
		got := make(chan [32]byte, 1)
		errc := make(chan error, 2)
		go func() {
			c, err := ln.AcceptTCP()
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(90 * time.Second))
			h := sha256.New()
			n, err := io.Copy(h, c)
			if err != nil || n != size {
				errc <- err
				return
			}
			got <- [32]byte(h.Sum(nil))
		}()
		var c *net.TCPConn
		inLabNS(t, a, func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: a.inner.AsSlice()}, Timeout: 30 * time.Second}
			conn, err := d.Dial("tcp4", ln.Addr().String())
			if err == nil {
				c = conn.(*net.TCPConn)
			}
			return err
		})
		c.SetDeadline(time.Now().Add(90 * time.Second))
		if _, err := c.Write(data); err != nil {
			t.Fatalf("sending %d bytes: %v", size, err)
		}
		c.CloseWrite()
		defer c.Close()
		select {
		case h := <-got:
			if h != sha256.Sum256(data) {
				t.Fatal("the stream arrived altered")
			}
		case err := <-errc:
			t.Fatalf("receiving: %v", err)
		}
	})

	t.Run("udp", func(t *testing.T) {
		var rx, tx *net.UDPConn
		inLabNS(t, b, func() (err error) {
			rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: b.inner.AsSlice()})
			return err
		})
		defer rx.Close()
		inLabNS(t, a, func() (err error) {
			tx, err = net.DialUDP("udp4", &net.UDPAddr{IP: a.inner.AsSlice()}, rx.LocalAddr().(*net.UDPAddr))
			return err
		})
		defer tx.Close()
		const size = 1372 // 1400-byte IP packets, as in bench/throughput.sh
		datagram := func(seq int) []byte {
			d := make([]byte, size)
			binary.BigEndian.PutUint32(d, uint32(seq))
			for i := 4; i < size; i++ {
				d[i] = byte(seq + i)
			}
			return d
		}
		seen := map[int]bool{}
		buf := make([]byte, 65536)
		receive := func(upTo int) {
			t.Helper()
			rx.SetReadDeadline(time.Now().Add(30 * time.Second))
			for len(seen) < upTo {
				n, err := rx.Read(buf)
				if err != nil {
					t.Fatalf("%d of %d datagrams received: %v", len(seen), upTo, err)
				}
				seq := int(binary.BigEndian.Uint32(buf))
				if n != size || !bytes.Equal(buf[:n], datagram(seq)) || seen[seq] {
					t.Fatalf("datagram %d: %d bytes, altered or duplicated", seq, n)
				}
				seen[seq] = true
			}
		}
		// Bursts of single datagrams (one write each, queued on the TUN
		// device), small enough for the receiver's socket buffer.
		seq := 0
		for burst := 0; burst < 80; burst++ {
			for i := 0; i < 16; i++ {
				if _, err := tx.Write(datagram(seq)); err != nil {
					t.Fatal(err)
				}
				seq++
			}
			receive(seq)
		}
		// UDP_SEGMENT: one write of 16 datagrams, which the kernel hands
		// the TUN reader as one USO super-packet.
		rc, err := tx.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, size) })
		if serr != nil {
			t.Fatalf("UDP_SEGMENT: %v", serr)
		}
		sender.largest.Store(0) // the TCP stream's batches do not count
		for burst := 0; burst < 8; burst++ {
			var w []byte
			for i := 0; i < 16; i++ {
				w = append(w, datagram(seq)...)
				seq++
			}
			if _, err := tx.Write(w); err != nil {
				t.Fatalf("UDP_SEGMENT write: %v", err)
			}
			receive(seq)
		}
		// With USO on the TUN device (Linux 6.2), each such write reached
		// the engine as one read of 16 segments, sealed and sent as one
		// batch. (Older kernels segment before the TUN: the datagrams then
		// arrive one by one, and how many queue up is up to the scheduler.)
		if got := sender.largest.Load(); kernelAtLeast(t, 6, 2) && got < 16 {
			t.Errorf("largest batch sent %d packets, want at least 16", got)
		}
	})

	for _, n := range []*nsNode{a, b} {
		for _, sec := range []string{"Udp", "Tcp"} {
			if c := snmpCounter(t, n, sec, "InCsumErrors"); c != 0 {
				t.Errorf("%s: %s InCsumErrors %d", n.name, sec, c)
			}
		}
	}
	for _, e := range []*Engine{ea, eb} {
		if st := e.EngineStats(); st.Malformed != 0 || st.DeviceErrors != 0 {
			t.Errorf("%s: %+v", e.DeviceName(), st)
		}
	}
	sa, _ := ea.Stats(ca.ID())
	sb, _ := eb.Stats(cb.ID())
	t.Logf("A %+v", sa)
	t.Logf("B %+v", sb)
	if sa.OutPackets < 8<<20/1400 || sa.ReplayDrops != 0 || sb.ReplayDrops != 0 || sa.AuthFailures != 0 || sb.AuthFailures != 0 {
		t.Errorf("A %+v\nB %+v", sa, sb)
	}
}
