package daemon

import (
	"reflect"
	"strings"
	"testing"
)

const minimal = `node:
  name: gw1
  state_dir: /var/lib/ikegw
`

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.IKE.Port != 500 || c.IKE.NATTPort != 4500 || c.Dataplane.Kind != "auto" || c.Dataplane.SeqMargin != DefaultSeqMargin ||
		c.Admin.Socket != DefaultSocket || c.Node.ClusterKeyFile != "/var/lib/ikegw/cluster.key" || c.Cluster != nil {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestParseConfigErrors(t *testing.T) {
	cluster := minimal + `cluster:
  raft_bind: 10.0.0.1:7400
  gossip_bind: 10.0.0.1:7401
  gossip_key_file: /k
  tls: {ca: /a, cert: /b, key: /c}
`
	for _, tc := range []struct{ doc, want string }{
		{minimal + "bogus: 1\n", "field bogus not found"},
		{minimal + "dataplane: {kind: ebpf}\n", `dataplane.kind "ebpf"`},
		{minimal + "ike: {listen: [not-an-ip]}\n", `ike.listen[0] "not-an-ip"`},
		{minimal + "ike: {port: 4500}\n", "both 4500"},
		{minimal + "log: {level: loud}\n", `log.level "loud"`},
		{minimal + "failover: {vips: [{interface: eth0, address: 192.0.2.10/24}]}\n", "needs a cluster section"},
		{cluster + "  bootstrap_expect: 2\n", "two voters without a witness"},
		{cluster + "  role: boss\n", `cluster.role "boss"`},
		{strings.Replace(cluster, "gossip_key_file: /k", "gossip_key_file: \"\"", 1), "gossip_key_file is required"},
		{cluster + "failover: {vips: [{interface: eth0, address: nonsense}]}\n", `failover.vips[0].address "nonsense"`},
		{"node: {state_dir: relative}\n", "must be an absolute path"},
		{minimal + "connections:\n  - name: x\n    remote_addrs: 192.0.2.2\n    psk: inline\n", "psk"},
	} {
		_, err := ParseConfig([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config:\n%s\nerr = %v, want it to mention %q", tc.doc, err, tc.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(minimal + "cluster: {raft_bind: 'a:1', gossip_bind: 'b:2', gossip_key_file: /k, tls: {ca: a, cert: b, key: c}}\n"))
	f.Add([]byte("connections:\n  - name: a\n    remote_addrs: 192.0.2.1\n    psk_env: X\n    children: [{name: c}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		// What parses re-parses to the same settings.
		c2, err := ParseConfig(c.Raw)
		if err != nil {
			t.Fatalf("re-parse failed: %v", err)
		}
		if !reflect.DeepEqual(c2.Node, c.Node) || c2.IKE.Port != c.IKE.Port || len(c2.Connections) != len(c.Connections) {
			t.Fatal("re-parse differs")
		}
	})
}
