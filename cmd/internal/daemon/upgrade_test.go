package daemon

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"ikegw/cluster"
	"ikegw/cmd/api"
)

// The members view carries each member's MaxCommand and the cluster's
// effective one, which `ikegwctl upgrade` and status show; a standalone
// node is its own cluster.
func TestMembersMaxCommand(t *testing.T) {
	n := testNode(t)
	srv := httptest.NewServer(adminMux(n, n.log))
	defer srv.Close()
	res, err := http.Get(srv.URL + api.PathMembers)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var m api.Members
	if err := json.NewDecoder(res.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	want := uint8(cluster.MaxCommandType)
	if len(m.Members) != 1 || m.Members[0].MaxCommand != want || m.EffectiveMaxCommand != want || m.Members[0].Version != Version {
		t.Fatalf("members %+v, want one member with max_command %d and effective %d", m, want, want)
	}
}
