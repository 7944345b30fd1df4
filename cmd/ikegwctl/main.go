// Command ikegwctl administers ikegwd through its admin API.
//
// Exit codes: 0 success, 1 the request failed (the daemon said no, or an
// argument is wrong), 2 the daemon could not be reached.
package main

import (
	"bytes"
	"context"
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

	"ikegw/cmd/internal/api"
)

var (
	socket string
	output string
)

type unreachable struct{ error }

func main() {
	cmd := root()
	if err := cmd.Execute(); err != nil {
		var u unreachable
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func root() *cobra.Command {
	c := &cobra.Command{Use: "ikegwctl", Short: "Administer an ikegw node", SilenceUsage: true}
	c.PersistentFlags().StringVar(&socket, "socket", "/run/ikegw/admin.sock", "admin socket of the local ikegwd")
	c.PersistentFlags().StringVarP(&output, "output", "o", "table", "output format: table | json")
	sas := &cobra.Command{Use: "sas", Short: "IKE and IPsec SAs"}
	sas.AddCommand(&cobra.Command{Use: "list", Short: "List SAs", Args: cobra.NoArgs, RunE: listSAs})
	c.AddCommand(
		&cobra.Command{Use: "status", Short: "Node status", Args: cobra.NoArgs, RunE: status},
		sas,
		action("initiate CONNECTION", "Start a connection", api.PathInitiate, "conn"),
		action("terminate CONNECTION", "Delete every SA of a connection (DELETEs are sent)", api.PathTerminate, "conn"),
		action("rekey SPI", "Rekey the IPsec SA pair with this inbound SPI (hex)", api.PathRekey, "spi"),
		action("dpd ICOOKIE_RCOOKIE", "Send a DPD R-U-THERE on an IKE SA now", api.PathDPD, "ike"),
	)
	return c
}

func client() *http.Client {
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
}

func call(method, path string, q url.Values, out any) error {
	u := "http://ikegwd" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return err
	}
	resp, err := client().Do(req)
	if err != nil {
		return unreachable{fmt.Errorf("cannot reach ikegwd at %s: %w", socket, err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return unreachable{err}
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	if out != nil {
		return json.Unmarshal(body, out)
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
	return w.Flush()
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
