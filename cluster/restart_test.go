package cluster

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"ikegw/ike/sa"
	"ikegw/store"
)

// countingBackend counts the FSM's transactions and snapshot restores.
type countingBackend struct {
	Backend
	updates, restores atomic.Int64
}

func (c *countingBackend) Update(fn func(Writer) error) error {
	c.updates.Add(1)
	return c.Backend.Update(fn)
}

func (c *countingBackend) Restore(r io.Reader) error {
	c.restores.Add(1)
	return c.Backend.Restore(r)
}

// newCountingCluster is newCluster with a countingBackend per node (a new
// one at every start).
func newCountingCluster(t *testing.T, roles []Role, disk bool, tune func(*Config)) (*tcluster, []*countingBackend) {
	t.Helper()
	c := &tcluster{t: t, roles: roles, disk: disk, sealer: testSealer(t), tune: tune}
	cbs := make([]*countingBackend, len(roles))
	c.backend = func(i int, b Backend) Backend {
		cbs[i] = &countingBackend{Backend: b}
		return cbs[i]
	}
	for i := range roles {
		c.nodes = append(c.nodes, &tnode{id: "n" + strconv.Itoa(i+1), dir: t.TempDir()})
	}
	c.startAll()
	t.Cleanup(c.stopAll)
	return c, cbs
}

// storeDump is everything a node's SA database holds, record by record.
func storeDump(t testing.TB, db *store.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.View(func(tx *store.Tx) error {
		if err := tx.ForEachIKE(func(s *sa.IKESA) error {
			b, err := sa.Marshal(s)
			out["ike/"+s.Cookies.String()] = fmt.Sprintf("%x", b)
			return err
		}); err != nil {
			return err
		}
		if err := tx.ForEachChild(func(c *sa.ChildSA) error {
			b, err := sa.Marshal(c)
			out[fmt.Sprintf("child/%08x", c.In.SPI)] = fmt.Sprintf("%x", b)
			return err
		}); err != nil {
			return err
		}
		w := txWriter{tx}
		for _, k := range []string{metaConfigVersion, metaActive, metaHandover, metaApplied} {
			v, err := w.Meta(k)
			if err != nil {
				return err
			}
			out["meta/"+k] = fmt.Sprintf("%x", v)
		}
		v, err := w.SealedMeta(metaConfig)
		out["smeta/"+metaConfig] = fmt.Sprintf("%x", v)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffDumps(a, b map[string]string) []string {
	var d []string
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if b[k] != a[k] {
			d = append(d, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, k)
		}
	}
	return d
}

func recordedMark(t testing.TB, db *store.DB) (appliedMark, bool) {
	t.Helper()
	var m appliedMark
	var ok bool
	if err := db.View(func(tx *store.Tx) error {
		var err error
		m, ok, err = readApplied(txWriter{tx})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return m, ok
}

func stripMark(t testing.TB, dir string, s *store.Sealer) {
	t.Helper()
	db, err := store.Open(filepath.Join(dir, SADBFile), s)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *store.Tx) error { return tx.DeleteMeta(metaApplied) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitApplied waits until tn's FSM has applied index idx.
func waitApplied(t testing.TB, tn *tnode, idx uint64) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%s applying index %d", tn.id, idx), func() bool { return tn.n.FSMAppliedIndex() >= idx })
}

// lastCommand commits a last command on the leader and returns its index:
// every node that applied it holds the whole log before it.
func lastCommand(c *tcluster, i byte) uint64 {
	c.commit(UpsertIKE(testIKE(i)))
	return c.leader().n.FSMAppliedIndex()
}

// TestRestartSkipsAppliedEntries: a follower restarted with its SA
// database is ready at once (its FSM applied index is the database's)
// and skips the entries after the snapshot instead of applying them
// again; what it holds afterwards is what the leader holds.
func TestRestartSkipsAppliedEntries(t *testing.T) {
	c, cbs := newCountingCluster(t, three, true, func(cfg *Config) { cfg.SnapshotThreshold = 1 << 30 })
	for i := range 10 {
		c.commit(UpsertIKE(testIKE(byte(i))))
	}
	for _, tn := range c.nodes {
		waitIKE(t, tn, 10)
		if err := tn.n.raft.Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
	}
	const after = 40
	for i := range after {
		c.commit(UpsertChild(testChild(uint32(0x1000+i))), CountersBatch(map[uint32]sa.Counters{0x1000: {OutSeq: uint64(i + 1)}}))
	}
	last := lastCommand(c, 100)
	l := c.leader()
	var fi int
	for i, tn := range c.nodes {
		if tn != l {
			fi = i
			break
		}
	}
	f := c.nodes[fi]
	waitApplied(t, f, last)
	c.stop(f)
	c.start(fi)
	c.connectAll()
	if got := f.n.FSMAppliedIndex(); got != last {
		t.Errorf("right after the restart FSMAppliedIndex is %d, want %d (the database's)", got, last)
	}
	last2 := lastCommand(c, 101)
	waitApplied(t, f, last2)
	cb := cbs[fi]
	if n := cb.restores.Load(); n != 0 {
		t.Errorf("the restart restored a snapshot %d times", n)
	}
	// One transaction reads the mark at the start, one applies the new
	// entry (a few more if a leadership change made c.commit retry):
	// never one per skipped entry.
	if n := cb.updates.Load(); n > 6 {
		t.Errorf("%d transactions after the restart: entries were applied again", n)
	}
	if n := f.n.RestartSkipped(); n < after {
		t.Errorf("skipped %d entries, want at least the %d after the snapshot", n, after)
	}
	if d := diffDumps(storeDump(t, l.db), storeDump(t, f.db)); len(d) > 0 {
		t.Errorf("after the restart %s's store differs from the leader's in %v", f.id, d)
	}
}

// TestRestartEqualsFullReplay: one node's data restarted three ways — the
// database kept (skip), the database lost (snapshot restored, the log after
// it applied), the database of the previous release (no applied index:
// the same full replay once) — ends with the same store, the same applied
// index, the same config index and the same last handover.
func TestRestartEqualsFullReplay(t *testing.T) {
	c, cbs := newCountingCluster(t, []Role{RoleGateway}, true, func(cfg *Config) { cfg.SnapshotThreshold = 1 << 30 })
	for i := range 20 {
		c.commit(UpsertIKE(testIKE(byte(i))), UpsertChild(testChild(uint32(0x100+i))))
	}
	c.commit(ConfigApply(3, []byte("psk=one")))
	tn := c.nodes[0]
	if err := tn.n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	c.commit(ConfigApply(4, []byte("psk=two")), SetActive("n1", tn.n.raft.CurrentTerm()))
	c.commit(Handover(HandoverBody{ID: 7, From: "n1", To: "n2", Term: tn.n.raft.CurrentTerm()}))
	for i := range 30 {
		c.commit(CountersBatch(map[uint32]sa.Counters{uint32(0x100 + i%20): {OutSeq: uint64(1000 + i), InSeq: uint64(i)}}), DeleteIKE(testIKE(byte(i%3)).Cookies))
	}
	last := lastCommand(c, 200)
	cfgIdx, ok := tn.n.ConfigIndex(4)
	if !ok {
		t.Fatal("config version 4 not found in the log")
	}
	c.stop(tn)
	base := tn.dir
	lost, old := t.TempDir(), t.TempDir()
	copyDir(t, base, lost)
	copyDir(t, base, old)
	if err := os.Remove(filepath.Join(lost, SADBFile)); err != nil {
		t.Fatal(err)
	}
	stripMark(t, old, c.sealer)

	type result struct {
		dump            map[string]string
		applied, cfgIdx uint64
		cfgOK           bool
		handover        HandoverBody
		skipped         uint64
		restores        int64
	}
	run := func(dir string) result {
		t.Helper()
		tn.dir = dir
		c.start(0)
		c.connectAll()
		c.leader()
		waitApplied(t, tn, last)
		var r result
		r.applied = tn.n.FSMAppliedIndex()
		r.cfgIdx, r.cfgOK = tn.n.ConfigIndex(4)
		h, ok, err := ReadHandover(tn.db)
		if err != nil || !ok {
			t.Fatalf("ReadHandover: %v %v", ok, err)
		}
		r.handover = h
		r.skipped = tn.n.RestartSkipped()
		r.restores = cbs[0].restores.Load()
		r.dump = storeDump(t, tn.db)
		c.stop(tn)
		return r
	}
	skip, full, upg := run(base), run(lost), run(old)
	if skip.skipped == 0 || skip.restores != 0 {
		t.Errorf("kept database: skipped %d entries, %d snapshot restores; want > 0 and 0", skip.skipped, skip.restores)
	}
	for name, r := range map[string]result{"lost database": full, "old database": upg} {
		if r.skipped != 0 || r.restores != 1 {
			t.Errorf("%s: skipped %d entries, %d snapshot restores; want 0 and 1", name, r.skipped, r.restores)
		}
		if d := diffDumps(r.dump, skip.dump); len(d) > 0 {
			t.Errorf("%s: the stores differ in %v", name, d)
		}
		if r.applied != skip.applied || r.applied != last {
			t.Errorf("%s: FSMAppliedIndex %d, kept database %d, want %d", name, r.applied, skip.applied, last)
		}
		if r.cfgIdx != skip.cfgIdx || r.cfgOK != skip.cfgOK || skip.cfgIdx != cfgIdx {
			t.Errorf("%s: ConfigIndex(4) = %d %v, kept database %d %v, before the restart %d", name, r.cfgIdx, r.cfgOK, skip.cfgIdx, skip.cfgOK, cfgIdx)
		}
		if r.handover != skip.handover {
			t.Errorf("%s: last handover %+v, kept database %+v", name, r.handover, skip.handover)
		}
	}
	// The old database now records its index: the next restart skips.
	if again := run(old); again.skipped == 0 || again.restores != 0 {
		t.Errorf("second start of the upgraded database: skipped %d, %d restores; want > 0 and 0", again.skipped, again.restores)
	}
}

// TestRestartAfterInstallSnapshot: a lagging follower that installed the
// leader's snapshot records the snapshot's index, so a restart right after
// keeps its database (no restore, nothing applied again).
func TestRestartAfterInstallSnapshot(t *testing.T) {
	c, cbs := newCountingCluster(t, three, true, func(cfg *Config) {
		cfg.TrailingLogs = 5
		cfg.SnapshotThreshold = 1 << 30
	})
	l := c.leader()
	li := slices.Index(c.nodes, l)
	lag := c.nodes[(li+1)%3]
	lagi := slices.Index(c.nodes, lag)
	c.isolate(lag)
	for i := range 30 {
		c.commit(UpsertIKE(testIKE(byte(i))))
	}
	// The last entry before the snapshots is a barrier, which the FSM
	// never sees: the snapshots' bytes hold an older index than theirs.
	bl := c.leader()
	if err := bl.n.raft.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	top := bl.n.raft.LastIndex()
	for _, tn := range c.nodes {
		if tn != lag {
			waitFor(t, 10*time.Second, tn.id+" processing the barrier", func() bool { return tn.n.raft.AppliedIndex() >= top })
			// raft's AppliedIndex counts entries queued for the FSM:
			// a snapshot may still find nothing newer; retry then.
			waitFor(t, 10*time.Second, tn.id+" snapshot at the barrier", func() bool {
				if err := tn.n.raft.Snapshot().Error(); err != nil {
					t.Fatal(err)
				}
				ms, err := tn.n.deps.Snapshots.List()
				return err == nil && len(ms) > 0 && ms[0].Index >= top
			})
		}
	}
	c.connectAll()
	waitIKE(t, lag, 30)
	if cbs[lagi].restores.Load() == 0 {
		t.Fatal("the lagging node caught up without installing a snapshot")
	}
	metas, err := lag.n.deps.Snapshots.List()
	if err != nil || len(metas) == 0 {
		t.Fatalf("snapshots of the lagging node: %v %v", len(metas), err)
	}
	m, ok := recordedMark(t, lag.db)
	if !ok || m.Index != metas[0].Index || m.Term != metas[0].Term {
		t.Fatalf("after installing snapshot %d (term %d) the database records %+v (%v)", metas[0].Index, metas[0].Term, m, ok)
	}
	c.stop(lag)
	c.start(lagi)
	// The start decides whether the database is kept (resume): it must
	// be, and skip what it holds.
	if n := cbs[lagi].restores.Load(); n != 0 {
		t.Errorf("the restart after the install restored a snapshot %d times", n)
	}
	c.connectAll()
	last := lastCommand(c, 77)
	waitApplied(t, lag, last)
	if n := cbs[lagi].restores.Load(); n != 0 {
		// The leader may send its snapshot again when its replication
		// state for the restarted follower points below its log's
		// start (raft's choice, not the restart's).
		t.Logf("after the restart the leader installed its snapshot again (%d restores)", n)
	}
	if d := diffDumps(storeDump(t, c.leader().db), storeDump(t, lag.db)); len(d) > 0 {
		t.Errorf("after the restart the lagging node's store differs from the leader's in %v", d)
	}
}

// TestRestartForgetsForeignIndex: a database whose index belongs to
// another log (the Raft state was lost) skips nothing.
func TestRestartForgetsForeignIndex(t *testing.T) {
	c, _ := newCountingCluster(t, []Role{RoleGateway}, true, nil)
	for i := range 5 {
		c.commit(UpsertIKE(testIKE(byte(i))))
	}
	tn := c.nodes[0]
	c.stop(tn)
	if err := os.RemoveAll(filepath.Join(tn.dir, RaftDir)); err != nil {
		t.Fatal(err)
	}
	c.start(0)
	c.connectAll()
	if got := tn.n.FSMAppliedIndex(); got != 0 {
		t.Errorf("FSMAppliedIndex %d on a node without Raft state, want 0", got)
	}
	c.commit(UpsertIKE(testIKE(50)))
	if n := tn.n.RestartSkipped(); n != 0 {
		t.Errorf("skipped %d entries of a new log", n)
	}
	if !hasIKE(tn.db, 50) {
		t.Error("the new log's entry is not in the store")
	}
}

// killHelperEnv names the data directory of TestRestartKillHelper's node.
const killHelperEnv = "IKEGW_RESTART_KILL_DIR"

// TestRestartKillHelper is the process TestRestartAfterKill kills: one
// node on disk, its SA database without fsync as in production, committing
// until it dies. It prints the count of commits after each one.
func TestRestartKillHelper(t *testing.T) {
	dir := os.Getenv(killHelperEnv)
	if dir == "" {
		t.Skip("helper process of TestRestartAfterKill")
	}
	c := &tcluster{t: t, roles: []Role{RoleGateway}, disk: true, sealer: testSealer(t),
		tune: func(cfg *Config) { cfg.SnapshotThreshold = 1 << 30 }}
	c.nodes = []*tnode{{id: "n1", dir: dir}}
	c.startAll()
	if err := c.nodes[0].db.SetNoSync(true); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		spi := uint32(0x1000 + i)
		c.commit(UpsertIKE(testIKE(byte(i))), UpsertChild(testChild(spi)))
		c.commit(CountersBatch(map[uint32]sa.Counters{spi: {OutSeq: uint64(i) + 1}}), DeleteIKE(testIKE(byte(i-3)).Cookies))
		if i == 20 {
			if err := c.nodes[0].n.raft.Snapshot().Error(); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Println(i + 1)
	}
}

// TestRestartAfterKill: a node killed with SIGKILL while it commits and
// applies restarts with its SA database kept, and ends with exactly what a
// node that lost its database (snapshot and full replay) ends with.
func TestRestartAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a helper process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestRestartKillHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), killHelperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	sc := bufio.NewScanner(out)
	n := 0
	for n < 60 && sc.Scan() {
		n, _ = strconv.Atoi(sc.Text())
	}
	if n < 60 {
		t.Fatalf("the helper stopped after %d commits: %v", n, sc.Err())
	}
	// Kill at a random point of its work (it keeps committing meanwhile).
	time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed = true

	lost := t.TempDir()
	copyDir(t, dir, lost)
	if err := os.Remove(filepath.Join(lost, SADBFile)); err != nil {
		t.Fatal(err)
	}
	c, cbs := newCountingCluster(t, []Role{RoleGateway}, true, nil)
	tn := c.nodes[0]
	c.stop(tn)
	run := func(d string) (map[string]string, uint64) {
		t.Helper()
		tn.dir = d
		c.start(0)
		c.connectAll()
		c.leader()
		last, err := tn.logs.LastIndex()
		if err != nil {
			t.Fatal(err)
		}
		// Every command in the log is committed once the new term's
		// first entry is: wait for the last command.
		var l raft.Log
		for ; last > 0; last-- {
			if err := tn.logs.GetLog(last, &l); err == nil && l.Type == raft.LogCommand {
				break
			}
		}
		waitApplied(t, tn, last)
		d2, a := storeDump(t, tn.db), tn.n.FSMAppliedIndex()
		c.stop(tn)
		return d2, a
	}
	m, ok := markOf(t, dir, c.sealer)
	if !ok || m.Index == 0 {
		t.Fatalf("the killed node's database records no applied index (%+v, %v)", m, ok)
	}
	kept, keptApplied := run(dir)
	if cbs[0].restores.Load() != 0 {
		t.Error("the killed node's database was replaced by the snapshot")
	}
	full, fullApplied := run(lost)
	if cbs[0].restores.Load() != 1 {
		t.Error("the node without a database did not restore the snapshot")
	}
	if d := diffDumps(full, kept); len(d) > 0 {
		t.Errorf("killed at index %d after %d commits: the kept database differs from a full replay in %v", m.Index, n, d)
	}
	if keptApplied != fullApplied {
		t.Errorf("FSMAppliedIndex kept %d, full replay %d", keptApplied, fullApplied)
	}
	t.Logf("killed after %d commits; database at index %d; both ended at %d", n, m.Index, keptApplied)
}

// markOf reads the applied index a closed node's SA database records.
func markOf(t *testing.T, dir string, s *store.Sealer) (appliedMark, bool) {
	t.Helper()
	db, err := store.Open(filepath.Join(dir, SADBFile), s)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return recordedMark(t, db)
}

// TestFSMSkipsWithoutOpening: entries at or below the database's index are
// neither opened nor decoded (garbage passes), later ones are applied and
// recorded with their term in the same transaction.
func TestFSMSkipsWithoutOpening(t *testing.T) {
	s := testSealer(t)
	db := testDB(t, s)
	f := NewFSM(DBBackend(db), s, quietLog())
	f.skipTo = 5
	f.applied.Store(5)
	for i := uint64(1); i <= 5; i++ {
		if r := f.Apply(&raft.Log{Index: i, Term: 2, Type: raft.LogCommand, Data: []byte("not an entry")}); r != nil {
			t.Fatalf("skipped entry %d: %v", i, r)
		}
	}
	if f.skipped.Load() != 5 || f.applied.Load() != 5 {
		t.Fatalf("skipped %d, applied %d; want 5 and 5", f.skipped.Load(), f.applied.Load())
	}
	if err := applyErr(f, 6, entry(t, s, UpsertIKE(testIKE(1)))); err != nil {
		t.Fatal(err)
	}
	if m, ok := recordedMark(t, db); !ok || m.Index != 6 {
		t.Errorf("recorded %+v %v, want index 6", m, ok)
	}
	if r := f.Apply(&raft.Log{Index: 7, Term: 3, Type: raft.LogCommand, Data: batchEntry(t, s, []Command{UpsertIKE(testIKE(2))})}); r == nil {
		t.Fatal("Batch returned nil")
	}
	if m, ok := recordedMark(t, db); !ok || m != (appliedMark{7, 3}) {
		t.Errorf("recorded %+v %v, want index 7 term 3", m, ok)
	}
	// A refused entry changes nothing and records nothing.
	if err := applyErr(f, 8, []byte{0xff}); err == nil {
		t.Fatal("garbage after the skipped range applied")
	}
	if m, _ := recordedMark(t, db); m.Index != 7 || f.applied.Load() != 8 {
		t.Errorf("after a refused entry: recorded %d (want 7), applied %d (want 8)", m.Index, f.applied.Load())
	}
}
