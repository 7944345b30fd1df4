package isakmp_test

import (
	"errors"
	"fmt"
	"net/netip"

	"ikegw/ike/isakmp"
)

func Example() {
	// Build an Informational message carrying a DPD R-U-THERE.
	m := &isakmp.Message{
		Header: isakmp.Header{ICookie: [8]byte{1}, RCookie: [8]byte{2}, Version: isakmp.Version1, Exchange: isakmp.ExchangeInfo, MessageID: 7},
		Payloads: []isakmp.Payload{
			&isakmp.Notify{DOI: isakmp.DOIIPsec, Protocol: isakmp.ProtoISAKMP, NotifyType: isakmp.NotifyRUThere,
				SPI: make([]byte, 16), Data: []byte{0, 0, 0, 42}},
		},
	}
	b, err := m.Marshal()
	if err != nil {
		panic(err)
	}
	got, err := isakmp.Parse(b)
	if err != nil {
		panic(err)
	}
	for _, p := range got.Payloads {
		switch p := p.(type) {
		case *isakmp.Notify:
			fmt.Println(got.Header.Exchange, p.NotifyType, p.Data)
		}
	}
	// Truncated input is a typed error naming where.
	_, err = isakmp.Parse(b[:len(b)-1])
	fmt.Println(errors.Is(err, isakmp.ErrShort), err)
	// Output:
	// Informational R-U-THERE [0 0 0 42]
	// true isakmp: header at offset 24: truncated: length field 60 > 59 bytes received
}

func ExampleIDFromPrefix() {
	id := isakmp.IDFromPrefix(netip.MustParsePrefix("10.1.0.0/16"), 0, 0)
	p, _ := id.Prefix()
	fmt.Println(id, p)
	// Output: IPV4_ADDR_SUBNET 10.1.0.0/16 10.1.0.0/16
}
