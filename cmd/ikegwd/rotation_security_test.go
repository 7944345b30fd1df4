package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"ikegw/cmd/api"
	"ikegw/store"
)

// setKeys rewrites a node's configuration with the given cluster and
// gossip keys (current first, then the previous ones).
func setKeys(t *testing.T, n *gwNode, cluster, gossip []string) {
	t.Helper()
	b, err := os.ReadFile(n.cfg)
	must(t, err)
	s := string(b)
	s = regexp.MustCompile(`(?m)^  cluster_key_file: .*\n(  previous_cluster_key_files: .*\n)?`).ReplaceAllString(s,
		"  cluster_key_file: "+cluster[0]+"\n"+prevLine("previous_cluster_key_files", cluster[1:]))
	s = regexp.MustCompile(`(?m)^  gossip_key_file: .*\n(  previous_gossip_key_files: .*\n)?`).ReplaceAllString(s,
		"  gossip_key_file: "+gossip[0]+"\n"+prevLine("previous_gossip_key_files", gossip[1:]))
	must(t, os.WriteFile(n.cfg, []byte(s), 0o600))
}

func prevLine(key string, files []string) string {
	if len(files) == 0 {
		return ""
	}
	return "  " + key + ": [" + strings.Join(files, ", ") + "]\n"
}

// waitHealthy waits until every node answers, the active sees all members
// alive and voting (gossip and Raft work with the keys in place), and n has
// applied what the active had committed.
func (cb *clusterBed) waitHealthy(ctx context.Context, n *gwNode) {
	cb.t.Helper()
	act := cb.waitActive(ctx, nil)
	ast, _ := cb.status(act)
	var last string
	for {
		ok := true
		var ms struct {
			Members []api.Member `json:"members"`
		}
		if err := act.client.get(api.PathMembers, &ms); err != nil {
			ok, last = false, err.Error()
		} else {
			alive := 0
			for _, m := range ms.Members {
				if m.Status == "alive" && m.Voter {
					alive++
				}
			}
			if alive != len(cb.nodes) {
				ok, last = false, fmt.Sprintf("members %+v", ms.Members)
			}
		}
		st, up := cb.status(n)
		if !up || st.Cluster == nil || ast.Cluster == nil || st.Cluster.AppliedIndex < ast.Cluster.CommitIndex {
			ok, last = false, fmt.Sprintf("%s: up %v status %+v", n.name, up, st.Cluster)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			cb.dump()
			cb.t.Fatalf("cluster not healthy after restarting %s: %s", n.name, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestKeyRotationRollingRestart rotates the cluster key and the gossip key
// of a 2-gateway + witness cluster by three rolling restarts (the active
// last each time, so it hands over first), as deploy/OPERATIONS.md
// describes, while strongSwan's tunnel stays up: same IKE SA and SPIs, no
// replayed sequence numbers, traffic after every restart. Step 1 adds the
// new keys as previous keys, step 2 makes them current (the SA database is
// resealed at start), step 3 drops the old keys; after step 3 the old key
// files are removed and the whole cluster still runs on the new keys.
func TestKeyRotationRollingRestart(t *testing.T) {
	t.Parallel()
	cb := newClusterBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cb.waitActive(ctx, nil)
	must(t, cb.swan.Initiate(ctx, "net"))
	sas, err := cb.swan.WaitFor(ctx, swanUp)
	if err != nil {
		cb.dump()
		t.Fatal(err)
	}
	first := sas[0]
	k1, _ := first.Child("net", "INSTALLED")
	pinger, err := cb.peer.StartPinger(cb.pprot, vipIn.Addr(), 20*time.Millisecond)
	must(t, err)
	defer pinger.Stop()

	oldC, oldG := filepath.Join(cb.dir, "cluster.key"), filepath.Join(cb.dir, "gossip.key")
	newC, newG := filepath.Join(cb.dir, "cluster-2.key"), filepath.Join(cb.dir, "gossip-2.key")
	must(t, store.GenerateClusterKey(newC))
	must(t, store.GenerateClusterKey(newG))
	steps := []struct {
		name            string
		cluster, gossip []string
	}{
		{"add the new keys", []string{oldC, newC}, []string{oldG, newG}},
		{"switch to the new keys", []string{newC, oldC}, []string{newG, oldG}},
		{"drop the old keys", []string{newC}, []string{newG}},
	}
	var outputs []string // of every ikegwd process that ran
	for _, step := range steps {
		act := cb.waitActive(ctx, nil)
		order := []*gwNode{}
		for _, n := range cb.nodes {
			if n != act {
				order = append(order, n)
			}
		}
		order = append(order, act)
		for _, n := range order {
			before := pinger.Snapshot().Received()
			setKeys(t, n, step.cluster, step.gossip)
			must(t, n.proc.Stop())
			outputs = append(outputs, n.proc.Output())
			cb.start(n)
			cb.waitHealthy(ctx, n)
			// Traffic flows and the peer's SAs are the ones it had.
			deadline := time.Now().Add(15 * time.Second)
			for pinger.Snapshot().Received() < before+25 {
				if time.Now().After(deadline) {
					cb.dump()
					t.Fatalf("%s, restart of %s: no traffic through the tunnel afterwards", step.name, n.name)
				}
				time.Sleep(50 * time.Millisecond)
			}
			now, err := cb.swan.ListSAs(ctx)
			must(t, err)
			if len(now) != 1 || now[0].UniqueID != first.UniqueID || now[0].InitiatorSPI != first.InitiatorSPI {
				cb.dump()
				t.Fatalf("%s, restart of %s: the peer's IKE SA changed: %+v", step.name, n.name, now)
			}
			if k, ok := now[0].Child("net", "INSTALLED"); !ok || k.SPIIn != k1.SPIIn || k.SPIOut != k1.SPIOut {
				cb.dump()
				t.Fatalf("%s, restart of %s: the peer's child SPIs changed", step.name, n.name)
			}
			if step.cluster[0] == newC && len(step.cluster) > 1 {
				// Switching to the new key reseals the node's SA database.
				if err := n.proc.WaitOutput(ctx, "resealed under the current cluster key"); err != nil {
					cb.dump()
					t.Fatalf("%s: %s did not reseal its SA database: %v", step.name, n.name, err)
				}
			}
			t.Logf("%s: %s restarted; %d ping replies so far", step.name, n.name, pinger.Snapshot().Received())
		}
	}
	if strings.Contains(cb.swan.Log(), "ESP sequence number verification failed") {
		cb.dump()
		t.Fatal("the peer saw replayed ESP sequence numbers")
	}
	// The old keys are gone for good: remove the files, restart a standby
	// once more, and the cluster still works.
	must(t, os.Remove(oldC))
	must(t, os.Remove(oldG))
	act := cb.waitActive(ctx, nil)
	for _, n := range cb.nodes {
		if n != act {
			must(t, n.proc.Stop())
			cb.start(n)
			cb.waitHealthy(ctx, n)
			break
		}
	}
	for _, n := range cb.nodes {
		outputs = append(outputs, n.proc.Output())
	}
	// A step done in the wrong order shows as gossip no node can read.
	for _, o := range outputs {
		if strings.Contains(o, "no installed keys could decrypt") {
			cb.dump()
			t.Fatal("gossip encrypted with a key the receiver did not hold during the rotation")
		}
	}
	// Every node's state (SA database, Raft log, stable store, snapshots)
	// is 0600 in 0700 directories.
	for _, n := range cb.nodes {
		checkStateModes(t, filepath.Join(cb.dir, n.name))
	}
	rec := pinger.Snapshot()
	t.Logf("ping: %d sent, %d replies, largest gap %v over the whole rotation", rec.Sent, rec.Received(), rec.MaxGap())
}
