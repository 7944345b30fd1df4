package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"ikegw/cluster/certs"
	"ikegw/cmd/api"
)

// Version is set at build time (-ldflags "-X main.Version=...").
var Version = "dev"

func moreCommands() []*cobra.Command {
	members := &cobra.Command{Use: "members", Short: "Cluster members"}
	members.AddCommand(&cobra.Command{Use: "list", Short: "List the cluster members (id, role, Raft address, voter, leader, version, status)",
		Args: cobra.NoArgs, RunE: listMembers},
		&cobra.Command{Use: "join ADDR", Short: "Add a node by its gossip address (HOST:PORT); any node serves it, the leader makes it a voter (admin role)",
			Args: cobra.ExactArgs(1), RunE: membersJoin},
		&cobra.Command{Use: "remove NODE", Short: "Remove a node from Raft and gossip for good: ask the leader; the active node and removals that break the quorum are refused (admin role)",
			Args: cobra.ExactArgs(1), RunE: membersRemove})

	var to string
	failover := &cobra.Command{Use: "failover", Short: "Planned failover: the active node (ask it) hands its role over, to --to if given",
		Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(); err != nil {
				return err
			}
			q := url.Values{}
			if to != "" {
				q.Set("to", to)
			}
			var f api.Failover
			if err := call(http.MethodPost, api.PathFailover, q, &f); err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), f)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s handed the active role over (leader now %q)\n", f.From, f.Leader)
			return nil
		}}
	failover.Flags().StringVar(&to, "to", "", "gateway that should become active")

	config := &cobra.Command{Use: "config", Short: "Running configuration"}
	config.AddCommand(
		&cobra.Command{Use: "show", Short: "Print the node's running configuration (secrets redacted) and the cluster-wide version it runs", Args: cobra.NoArgs,
			RunE: showConfig},
		&cobra.Command{Use: "apply FILE", Short: "Replicate the file's connections section to every node through Raft (ask the leader; a bad file is refused and nothing changes; admin role)",
			Args: cobra.ExactArgs(1), RunE: applyConfig},
		&cobra.Command{Use: "validate FILE", Short: "Have the node validate a configuration file (exit 1 when invalid)", Args: cobra.ExactArgs(1),
			RunE: validateConfig},
	)

	snapshot := &cobra.Command{Use: "snapshot", Short: "SA database snapshots (restore is offline: see deploy/OPERATIONS.md)"}
	snapshot.AddCommand(&cobra.Command{Use: "save FILE", Short: "Save the node's SA database snapshot (values stay sealed with the cluster key)",
		Args: cobra.ExactArgs(1), RunE: saveSnapshot})

	return []*cobra.Command{members, failover, config, snapshot, certsCommand(),
		{Use: "version", Short: "Print ikegwctl's version", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
			v := Version
			if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
				v = bi.Main.Version
			}
			fmt.Fprintln(cmd.OutOrStdout(), "ikegwctl", v)
			return nil
		}}}
}

func printCluster(out io.Writer, c *api.ClusterStatus) error {
	if c == nil {
		return nil
	}
	var m api.Members
	merr := call(http.MethodGet, api.PathMembers, nil, &m)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	lag := uint64(0)
	if c.LastIndex > c.AppliedIndex {
		lag = c.LastIndex - c.AppliedIndex
	}
	fmt.Fprintf(w, "raft state\t%s\nleader\t%s (ready %t)\nterm\t%d\ncommit/applied/last index\t%d/%d/%d\napply lag\t%d\n",
		c.State, c.Leader, c.LeaderReady, c.Term, c.CommitIndex, c.AppliedIndex, c.LastIndex, lag)
	if merr == nil {
		fmt.Fprintf(w, "active node (VIP owner)\t%s\n", m.Active)
	}
	if t := c.LastTakeover; t != nil {
		fmt.Fprintf(w, "last takeover\t%s: load %.1f ms, commit %.1f ms, install %.1f ms, engine %.1f ms (%d IKE, %d IPsec SAs)\n",
			t.Started.Format(time.RFC3339), t.LoadMS, t.CommitMS, t.InstallMS, t.EngineMS, t.IKESAs, t.ChildSAs)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if merr != nil {
		return merr
	}
	fmt.Fprintln(out)
	return membersTable(out, m)
}

func listMembers(cmd *cobra.Command, _ []string) error {
	if err := checkOutput(); err != nil {
		return err
	}
	var m api.Members
	if err := call(http.MethodGet, api.PathMembers, nil, &m); err != nil {
		return err
	}
	if output == "json" {
		return printJSON(cmd.OutOrStdout(), m)
	}
	return membersTable(cmd.OutOrStdout(), m)
}

func membersTable(out io.Writer, m api.Members) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tROLE\tRAFT ADDRESS\tVOTER\tLEADER\tACTIVE\tVERSION\tMAX COMMAND\tSTATUS")
	for _, x := range m.Members {
		fmt.Fprintf(w, "%s\t%s\t%s\t%t\t%t\t%t\t%s\t%s\t%s\n", x.ID, x.Role, dash(x.RaftAddr), x.Voter, x.Leader, x.Active, dash(x.Version),
			maxCommand(x.MaxCommand), x.Status)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(out, "effective max command: %s (command types above it stay off until every member applies them)\n",
		maxCommand(m.EffectiveMaxCommand))
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// maxCommand shows a MaxCommand; 0 means the node asked did not report it
// (an ikegwd older than the field).
func maxCommand(c uint8) string {
	if c == 0 {
		return "-"
	}
	return strconv.Itoa(int(c))
}

// showSA prints one IKE SA (by cookies) with its IPsec SAs, or one IPsec
// SA (by inbound SPI), like swanctl --list-sas.
func showSA(cmd *cobra.Command, args []string) error {
	if err := checkOutput(); err != nil {
		return err
	}
	id := strings.ToLower(args[0])
	var s api.SAs
	if err := call(http.MethodGet, api.PathSAs, nil, &s); err != nil {
		return err
	}
	var sel api.SAs
	if i, r, ok := strings.Cut(id, "_"); ok {
		for _, x := range s.IKE {
			if x.ICookie == i && x.RCookie == r {
				sel.IKE = append(sel.IKE, x)
			}
		}
		for _, c := range s.Children {
			if c.ICookie == i && c.RCookie == r {
				sel.Children = append(sel.Children, c)
			}
		}
	} else {
		spi, err := strconv.ParseUint(strings.TrimPrefix(id, "0x"), 16, 32)
		if err != nil {
			return fmt.Errorf("sas show %q: want ICOOKIE_RCOOKIE or an inbound SPI in hex", args[0])
		}
		for _, c := range s.Children {
			if v, err := strconv.ParseUint(strings.TrimPrefix(c.SPIIn, "0x"), 16, 32); err == nil && v == spi {
				sel.Children = append(sel.Children, c)
			}
		}
	}
	if len(sel.IKE) == 0 && len(sel.Children) == 0 {
		return fmt.Errorf("sas show %s: no such SA", args[0])
	}
	if output == "json" {
		return printJSON(cmd.OutOrStdout(), sel)
	}
	out := cmd.OutOrStdout()
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%s (in %s)", t.Format(time.RFC3339), time.Until(t).Round(time.Second))
	}
	for _, x := range sel.IKE {
		fmt.Fprintf(out, "%s: #%s_i %s_r, %s, %s\n", x.Connection, x.ICookie, x.RCookie, x.State, x.Role)
		fmt.Fprintf(out, "  local  '%s' @ %s\n  remote '%s' @ %s\n", x.LocalID, x.Local, x.RemoteID, x.Remote)
		if x.PeerCert != "" {
			fmt.Fprintf(out, "  peer certificate SHA-256 %s\n", x.PeerCert)
		}
		fmt.Fprintf(out, "  encr %d/%d bits, hash %d, group %d; NAT local %t remote %t, floated %t; DPD %t (seq %d)\n",
			x.Encr, x.KeyLen, x.Hash, x.Group, x.NATLocal, x.NATRemote, x.Floated, x.DPD, x.DPDSeq)
		fmt.Fprintf(out, "  established %s, rekey %s, expires %s\n", x.Established.Format(time.RFC3339), ts(x.RekeyAt), ts(x.ExpireAt))
	}
	for _, c := range sel.Children {
		alg := c.Encr
		if c.Integ != "" {
			alg += "/" + c.Integ
		}
		fmt.Fprintf(out, "  %s: %s, reqid %d, %s, ESP%s SPIs: %s_i %s_o\n", c.Child, c.State, c.Reqid, c.Mode,
			map[bool]string{true: " in UDP", false: ""}[c.UDPEncap], c.SPIIn, c.SPIOut)
		pfs := "no PFS"
		if c.PFSGroup != 0 {
			pfs = fmt.Sprintf("PFS group %d", c.PFSGroup)
		}
		fmt.Fprintf(out, "    %s, %s\n    in  %d bytes, %d packets (seq %d)\n    out %d bytes, %d packets (seq %d)\n",
			alg, pfs, c.BytesIn, c.PacketsIn, c.InSeq, c.BytesOut, c.PacketsOut, c.OutSeq)
		fmt.Fprintf(out, "    established %s, rekey %s, expires %s\n", c.Established.Format(time.RFC3339), ts(c.RekeyAt), ts(c.ExpireAt))
		fmt.Fprintf(out, "    local  %s\n    remote %s\n", strings.Join(c.LocalTS, " "), strings.Join(c.RemoteTS, " "))
	}
	return nil
}

func validateConfig(cmd *cobra.Command, args []string) error {
	if err := checkOutput(); err != nil {
		return err
	}
	f, err := os.Open(args[0])
	if err != nil {
		return fmt.Errorf("config validate: %w", err)
	}
	defer f.Close()
	var v api.Validation
	err = callBody(http.MethodPost, api.PathValidate, nil, f, &v)
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	if output == "json" {
		return printJSON(cmd.OutOrStdout(), v)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (node %s, connections: %s)\n", args[0], v.Node, strings.Join(v.Connections, ", "))
	return nil
}

// saveSnapshot writes to FILE.tmp and renames it once complete, so a failed
// transfer never leaves a file that looks good.
func saveSnapshot(cmd *cobra.Command, args []string) error {
	path := args[0]
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("snapshot save: %s exists; refusing to overwrite", path)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	err = call(http.MethodGet, api.PathSnapshot, nil, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		var u unreachable
		if errors.As(err, &u) {
			return err
		}
		return fmt.Errorf("snapshot save %s: %w", path, err)
	}
	fi, _ := os.Stat(path)
	fmt.Fprintf(cmd.OutOrStdout(), "snapshot written to %s (%d bytes)\n", path, fi.Size())
	return nil
}

func certsCommand() *cobra.Command {
	var dir, cn string
	c := &cobra.Command{Use: "certs", Short: "Lab certificates for the cluster's mutual TLS and the admin API"}
	c.PersistentFlags().StringVar(&dir, "dir", "/etc/ikegw/certs", "certificate directory (the CA is created there if missing)")
	c.PersistentFlags().StringVar(&cn, "ca-name", "ikegw lab CA", "common name of a new CA")
	c.AddCommand(&cobra.Command{Use: "nodes NAME=IP[,IP...] ...", Short: "Create the CA if needed and a certificate for each node that has none",
		Args: cobra.MinimumNArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
			var nodes []certs.Node
			for _, a := range args {
				name, ips, ok := strings.Cut(a, "=")
				if !ok || name == "" {
					return fmt.Errorf("certs nodes: %q: want NAME=IP[,IP...]", a)
				}
				n := certs.Node{Name: name}
				for _, s := range strings.Split(ips, ",") {
					ip := net.ParseIP(s)
					if ip == nil {
						return fmt.Errorf("certs nodes: %q: %q is not an IP address", a, s)
					}
					n.IPs = append(n.IPs, ip)
				}
				nodes = append(nodes, n)
			}
			issued, err := certs.Lab(dir, cn, nodes)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "issued in %s: %s\n", dir, strings.Join(issued, ", "))
			return nil
		}})
	var admin bool
	client := &cobra.Command{Use: "client NAME", Short: "Issue an admin API client certificate (read-only unless --admin)",
		Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
			cert, key, err := issueClient(dir, args[0], admin)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "client certificate %s, key %s (admin %t)\n", cert, key, admin)
			return nil
		}}
	client.Flags().BoolVar(&admin, "admin", false, "admin role (URI SAN ikegw:role=admin): may change state")
	c.AddCommand(client)
	return c
}

// AdminURI marks an admin client certificate (see daemon.RoleAdminURI).
const AdminURI = "ikegw:role=admin"

func issueClient(dir, name string, admin bool) (string, string, error) {
	if name == "" || filepath.Base(name) != name {
		return "", "", fmt.Errorf("certs client: %q is not a plain file name", name)
	}
	ca, err := certs.LoadCA(dir)
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name, Organization: []string{"ikegw admin client"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(certs.NodeValidity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if admin {
		u, _ := url.Parse(AdminURI)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return "", "", fmt.Errorf("certs client %s: %w", name, err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath := filepath.Join(dir, "client-"+name+".pem"), filepath.Join(dir, "client-"+name+"-key.pem")
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return "", "", fmt.Errorf("certs client: %s exists; refusing to overwrite", p)
		}
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}
