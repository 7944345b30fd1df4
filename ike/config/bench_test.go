package config

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
)

func BenchmarkParseExample(b *testing.B) {
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		b.Fatal(err)
	}
	o := fuzzOptions()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parse(data, o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMatchRemote measures the lookup a responder does per new
// phase 1, with 1000 connections of which the last matches exactly.
func BenchmarkMatchRemote(b *testing.B) {
	cfg := &Config{}
	for i := range 1000 {
		cfg.Connections = append(cfg.Connections, &Connection{
			Name:   fmt.Sprintf("c%d", i),
			Remote: netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}),
		})
	}
	cfg.Connections = append(cfg.Connections, &Connection{Name: "any"})
	addr := cfg.Connections[999].Remote
	b.ReportAllocs()
	for b.Loop() {
		if m := cfg.MatchRemote(addr); len(m) != 2 {
			b.Fatalf("%d matches", len(m))
		}
	}
}
