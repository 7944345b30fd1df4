// Command ikeload is a handshake load generator: it sets up many IKEv1
// Main Mode + Quick Mode tunnels (PSK) towards one responder with ikegw's
// own engine as the initiator, and reports tunnels per second and the
// setup latency (from Initiate until the Quick Mode's IPsec SA pair is
// installed) at p50 / p99.
//
// Every tunnel is its own connection from its own local address, so the
// responder sees N distinct peers (one ISAKMP SA per source address): give
// -local as many addresses as -tunnels (they must exist on a local
// interface, e.g. added to lo in a lab namespace). Each tunnel's Quick Mode
// proposes its local address range -ts-base + i (a /32) to the responder's
// -remote-ts.
//
// It is a test tool: persistence is in memory and the data plane only
// records installs; nothing is sent to the kernel. It stops by itself after
// -tunnels setups or -duration, whichever comes first.
//
//	ikeload -target 10.77.0.1 -local 10.78.0.1-10.78.7.208 -tunnels 2000 \
//	    -concurrency 64 -proposal aes128-sha256-ecp256 -esp aes128-sha256 \
//	    -psk-file psk.txt -o json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(mainErr(os.Args[1:], os.Stdout, os.Stderr))
}

func mainErr(args []string, stdout, stderr io.Writer) int {
	opts, format, level, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "ikeload:", err)
		return 2
	}
	opts.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "ikeload:", err)
		return 1
	}
	switch format {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, "ikeload:", err)
			return 1
		}
	default:
		res.WriteTable(stdout)
	}
	if res.OK == 0 {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (Options, string, slog.Level, error) {
	fs := flag.NewFlagSet("ikeload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o                                   Options
		target, local, tsBase, remoteTS     string
		pskFile, pskEnv, format, logLevel   string
		port, nattPort, localPort, localNAT uint
	)
	fs.StringVar(&target, "target", "", "responder address (required)")
	fs.UintVar(&port, "port", 500, "responder IKE port")
	fs.UintVar(&nattPort, "natt-port", 4500, "responder NAT-T port (the engine floats there when a NAT is detected)")
	fs.StringVar(&local, "local", "", "local source addresses, one per tunnel: comma-separated addresses, ranges a-b or prefixes (required)")
	fs.UintVar(&localPort, "local-port", 500, "local IKE port")
	fs.UintVar(&localNAT, "local-natt-port", 4500, "local NAT-T port")
	fs.IntVar(&o.Tunnels, "tunnels", 2000, "number of tunnels to set up")
	fs.IntVar(&o.Concurrency, "concurrency", 64, "tunnels in setup at once")
	fs.IntVar(&o.Engines, "engines", 1, "initiator engines (each its own event loop, on its own share of the local addresses)")
	fs.StringVar(&o.Proposal, "proposal", "aes128-sha256-ecp256", "IKE proposal (strongSwan spelling)")
	fs.StringVar(&o.ESP, "esp", "aes128-sha256", "ESP proposal (strongSwan spelling); add a group for PFS")
	fs.StringVar(&pskFile, "psk-file", "", "file holding the pre-shared key (trailing newline ignored)")
	fs.StringVar(&pskEnv, "psk-env", "", "environment variable holding the pre-shared key")
	fs.StringVar(&tsBase, "ts-base", "10.200.0.0", "first local traffic selector address; tunnel i proposes ts-base+i as a /32")
	fs.StringVar(&remoteTS, "remote-ts", "10.99.0.0/24", "remote traffic selector (the responder's protected subnet)")
	fs.DurationVar(&o.TunnelTimeout, "tunnel-timeout", 30*time.Second, "give up one tunnel's setup after this long")
	fs.DurationVar(&o.Duration, "duration", 5*time.Minute, "stop the whole run after this long")
	fs.DurationVar(&o.Retransmit, "retransmit", 4*time.Second, "first retransmission timeout of IKE requests")
	fs.BoolVar(&o.Encap, "encap", false, "force UDP encapsulation (pretend to be behind a NAT: IKE floats to the NAT-T port, ESP in UDP)")
	fs.StringVar(&format, "o", "table", "output: table or json")
	fs.StringVar(&logLevel, "log-level", "warn", "engine log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return o, "", 0, err
	}
	if fs.NArg() > 0 {
		return o, "", 0, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return o, "", 0, fmt.Errorf("-log-level %q: want debug, info, warn or error", logLevel)
	}
	if format != "table" && format != "json" {
		return o, "", 0, fmt.Errorf("-o %q: want table or json", format)
	}
	var err error
	if target == "" {
		return o, "", 0, errors.New("-target is required")
	}
	if o.Target, err = netip.ParseAddr(target); err != nil {
		return o, "", 0, fmt.Errorf("-target %q: %w", target, err)
	}
	for _, p := range []struct {
		name string
		v    uint
		dst  *uint16
	}{{"-port", port, &o.Port}, {"-natt-port", nattPort, &o.NATTPort}, {"-local-port", localPort, &o.LocalPort}, {"-local-natt-port", localNAT, &o.LocalNATTPort}} {
		if p.v == 0 || p.v > 65535 {
			return o, "", 0, fmt.Errorf("%s %d: want 1..65535", p.name, p.v)
		}
		*p.dst = uint16(p.v)
	}
	if local == "" {
		return o, "", 0, errors.New("-local is required")
	}
	if o.Local, err = ParseAddrList(local, max(o.Tunnels, 1)); err != nil {
		return o, "", 0, fmt.Errorf("-local: %w", err)
	}
	if o.TSBase, err = netip.ParseAddr(tsBase); err != nil {
		return o, "", 0, fmt.Errorf("-ts-base %q: %w", tsBase, err)
	}
	if o.RemoteTS, err = netip.ParsePrefix(remoteTS); err != nil {
		return o, "", 0, fmt.Errorf("-remote-ts %q: %w", remoteTS, err)
	}
	switch {
	case pskFile != "" && pskEnv != "":
		return o, "", 0, errors.New("give -psk-file or -psk-env, not both")
	case pskFile != "":
		b, err := os.ReadFile(pskFile)
		if err != nil {
			return o, "", 0, fmt.Errorf("-psk-file: %w", err)
		}
		o.PSK = []byte(strings.TrimRight(string(b), "\r\n"))
	case pskEnv != "":
		v, ok := os.LookupEnv(pskEnv)
		if !ok {
			return o, "", 0, fmt.Errorf("-psk-env: variable %s is not set", pskEnv)
		}
		o.PSK = []byte(v)
	default:
		return o, "", 0, errors.New("a pre-shared key is required: -psk-file or -psk-env")
	}
	if len(o.PSK) == 0 {
		return o, "", 0, errors.New("the pre-shared key is empty")
	}
	return o, format, level, nil
}
