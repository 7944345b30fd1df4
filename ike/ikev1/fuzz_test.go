package ikev1

import (
	"testing"
	"time"

	"ikegw/ike/isakmp"
)

// FuzzHandlePacket feeds arbitrary datagrams to an engine that holds an
// established SA (and to one that holds none): the engine never panics, and
// garbage never takes down the SA it holds. Inputs that start with the SA's
// cookies reach the decryption and payload paths.
func FuzzHandlePacket(f *testing.F) {
	a, b, w := pairNodes(f, "aes128-sha256-ecp256", "aes128-sha256")
	initiate(f, w, a, "to-b")
	ike, _, _ := checkPair(f, a, b)
	// Seeds: every message of the exchange, as sent.
	for _, l := range a.lists {
		for _, act := range l {
			if s, ok := act.(Send); ok {
				f.Add(s.Data, false)
			}
		}
	}
	h := isakmp.Header{ICookie: ike.Cookies.I, RCookie: ike.Cookies.R, Version: isakmp.Version1,
		Exchange: isakmp.ExchangeInfo, Flags: isakmp.FlagEncryption, MessageID: 1, NextPayload: isakmp.PayloadHash, Length: 60}
	f.Add(append(h.AppendTo(nil), make([]byte, 32)...), true)
	f.Fuzz(func(t *testing.T, data []byte, withCookies bool) {
		if withCookies && len(data) >= 16 {
			copy(data, ike.Cookies.I[:])
			copy(data[8:], ike.Cookies.R[:])
		}
		pkt := Packet{Local: ike.Remote, Remote: ike.Local, Data: data}
		b.eng.HandlePacket(w.now, pkt)
		fresh, err := New(Config{Connections: b.eng.cfg.Connections})
		if err != nil {
			t.Fatal(err)
		}
		fresh.HandlePacket(w.now, pkt)
		fresh.HandleTimer(w.now.Add(time.Hour), Timer{Kind: TimerHalfOpen})
		if b.eng.ikes[ike.Cookies.Key()] == nil {
			t.Fatal("a fuzzed packet removed the established SA")
		}
	})
}
