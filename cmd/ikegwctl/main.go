// Command ikegwctl administers ikegwd through its admin API.
//
// It talks to the local daemon over the admin unix socket (--socket, root
// only) or to any node over TCP with the cluster's mutual TLS (--addr with
// --ca, --cert and --key; a client certificate with URI SAN
// "ikegw:role=admin" may change state, others are read-only).
//
// Exit codes: 0 success, 1 the request failed (the daemon said no, or an
// argument is wrong), 2 the daemon could not be reached, 3 `upgrade next`
// refused a step that would drop redundancy now.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"ikegw/cmd/api"
)

var (
	socket string
	output string
	addr   string
	tlsCA  string
	tlsCrt string
	tlsKey string
)

type unreachable struct{ error }

// httpError is a non-2xx answer of the daemon: its message (the answer's
// "error" field, or the status and body), the status code and the body.
type httpError struct {
	code int
	msg  string
	body []byte
}

func (e *httpError) Error() string { return e.msg }

func main() {
	cmd := root()
	if err := cmd.Execute(); err != nil {
		var u unreachable
		if errors.As(err, &u) {
			os.Exit(2)
		}
		var c interface{ ExitCode() int }
		if errors.As(err, &c) {
			os.Exit(c.ExitCode())
		}
		os.Exit(1)
	}
}

func root() *cobra.Command {
	c := &cobra.Command{Use: "ikegwctl", Short: "Administer an ikegw node", SilenceUsage: true}
	c.PersistentFlags().StringVar(&socket, "socket", "/run/ikegw/admin.sock", "admin socket of the local ikegwd")
	c.PersistentFlags().StringVarP(&output, "output", "o", "table", "output format: table | json")
	c.PersistentFlags().StringVar(&addr, "addr", "", "HOST:PORT of a node's TLS admin API (instead of --socket)")
	c.PersistentFlags().StringVar(&tlsCA, "ca", "/etc/ikegw/certs/ca.pem", "with --addr: the cluster CA certificate")
	c.PersistentFlags().StringVar(&tlsCrt, "cert", "", "with --addr: client certificate (PEM)")
	c.PersistentFlags().StringVar(&tlsKey, "key", "", "with --addr: client key (PEM)")
	sas := &cobra.Command{Use: "sas", Short: "IKE and IPsec SAs"}
	sas.AddCommand(&cobra.Command{Use: "list", Short: "List SAs", Args: cobra.NoArgs, RunE: listSAs},
		&cobra.Command{Use: "show ID", Short: "Show one IKE SA (ICOOKIE_RCOOKIE) with its IPsec SAs, or one IPsec SA (inbound SPI, hex)",
			Args: cobra.ExactArgs(1), RunE: showSA})
	c.AddCommand(
		&cobra.Command{Use: "status", Short: "Node status", Args: cobra.NoArgs, RunE: status},
		sas,
		action("initiate CONNECTION", "Start a connection", api.PathInitiate, "conn"),
		action("terminate CONNECTION", "Delete every SA of a connection (DELETEs are sent)", api.PathTerminate, "conn"),
		action("rekey SPI", "Rekey the IPsec SA pair with this inbound SPI (hex)", api.PathRekey, "spi"),
		action("dpd ICOOKIE_RCOOKIE", "Send a DPD R-U-THERE on an IKE SA now", api.PathDPD, "ike"),
	)
	c.AddCommand(moreCommands()...)
	c.AddCommand(upgradeCommand())
	return c
}

// client returns the HTTP client and base URL of the chosen transport.
func client() (*http.Client, string, error) {
	if addr == "" {
		return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		}}, "http://ikegwd", nil
	}
	if tlsCrt == "" || tlsKey == "" {
		return nil, "", errors.New("--addr needs --cert and --key (a client certificate of the cluster CA)")
	}
	cert, err := tls.LoadX509KeyPair(tlsCrt, tlsKey)
	if err != nil {
		return nil, "", fmt.Errorf("--cert %s / --key %s: %w", tlsCrt, tlsKey, err)
	}
	caPEM, err := os.ReadFile(tlsCA)
	if err != nil {
		return nil, "", fmt.Errorf("--ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, "", fmt.Errorf("--ca %s: no PEM certificate", tlsCA)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", fmt.Errorf("--addr %q: %w", addr, err)
	}
	cfg := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, ServerName: host}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}, "https://" + addr, nil
}

func where() string {
	if addr != "" {
		return addr
	}
	return socket
}

func call(method, path string, q url.Values, out any) error {
	return callBody(method, path, q, nil, out)
}

// callBody sends body (may be nil) and decodes a JSON answer into out, or
// copies the raw answer when out is an io.Writer.
func callBody(method, path string, q url.Values, body io.Reader, out any) error {
	cl, base, err := client()
	if err != nil {
		return err
	}
	u := base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return unreachable{fmt.Errorf("cannot reach ikegwd at %s: %w", where(), err)}
	}
	defer resp.Body.Close()
	if w, ok := out.(io.Writer); ok && resp.StatusCode/100 == 2 {
		if _, err := io.Copy(w, resp.Body); err != nil {
			return unreachable{fmt.Errorf("reading the answer of %s: %w", where(), err)}
		}
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return unreachable{err}
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &httpError{code: resp.StatusCode, msg: e.Error, body: data}
		}
		return &httpError{code: resp.StatusCode, msg: fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(data)), body: data}
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func checkOutput() error {
	if output != "table" && output != "json" {
		return fmt.Errorf("--output %q: want table or json", output)
	}
	return nil
}

func status(cmd *cobra.Command, _ []string) error {
	if err := checkOutput(); err != nil {
		return err
	}
	var st api.Status
	if err := call(http.MethodGet, api.PathStatus, nil, &st); err != nil {
		return err
	}
	if output == "json" {
		return printJSON(cmd.OutOrStdout(), st)
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "node\t%s\nversion\t%s\nrole\t%s\ndata plane\t%s\nIKE SAs\t%d\nIPsec SA pairs\t%d\nstarted\t%s\nconnections\t%s\n",
		st.Node, st.Version, st.Role, st.Dataplane, st.IKESAs, st.ChildSAs, st.StartedAt.Format(time.RFC3339), strings.Join(st.Connection, ", "))
	if err := w.Flush(); err != nil {
		return err
	}
	return printCluster(cmd.OutOrStdout(), st.Cluster)
}

func listSAs(cmd *cobra.Command, _ []string) error {
	if err := checkOutput(); err != nil {
		return err
	}
	var s api.SAs
	if err := call(http.MethodGet, api.PathSAs, nil, &s); err != nil {
		return err
	}
	if output == "json" {
		return printJSON(cmd.OutOrStdout(), s)
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CONNECTION\tSTATE\tROLE\tLOCAL\tREMOTE\tCOOKIES\tNAT\tESTABLISHED")
	for _, i := range s.IKE {
		nat := "-"
		if i.NATLocal || i.NATRemote {
			nat = fmt.Sprintf("local=%t remote=%t", i.NATLocal, i.NATRemote)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s_i %s_r\t%s\t%s\n", i.Connection, i.State, i.Role, i.Local, i.Remote,
			i.ICookie, i.RCookie, nat, i.Established.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CONNECTION/CHILD\tSTATE\tSPI IN\tSPI OUT\tLOCAL TS\tREMOTE TS\tALGORITHMS\tBYTES IN/OUT\tPACKETS IN/OUT")
	for _, c := range s.Children {
		alg := c.Encr
		if c.Integ != "" {
			alg += "/" + c.Integ
		}
		fmt.Fprintf(w, "%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d/%d\n", c.Connection, c.Child, c.State, c.SPIIn, c.SPIOut,
			strings.Join(c.LocalTS, ","), strings.Join(c.RemoteTS, ","), alg, c.BytesIn, c.BytesOut, c.PacketsIn, c.PacketsOut)
	}
	return w.Flush()
}

func action(use, short, path, param string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		if err := call(http.MethodPost, path, url.Values{param: {args[0]}}, nil); err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), "ok")
		return nil
	}}
}
