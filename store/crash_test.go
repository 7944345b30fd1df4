package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	"ikegw/ike/sa"
)

// Environment of the crash child: what to write, where, from which index.
const (
	envCrashMode  = "IKEGW_STORE_CRASH_CHILD" // "db" or "raft"
	envCrashPath  = "IKEGW_STORE_CRASH_PATH"
	envCrashKey   = "IKEGW_STORE_CRASH_KEY" // key file path (db mode)
	envCrashStart = "IKEGW_STORE_CRASH_START"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envCrashMode); mode != "" {
		if err := crashChild(mode); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashChild writes records in a loop until it is killed, printing the
// number of the last record of each committed (fsynced) transaction.
func crashChild(mode string) error {
	start, err := strconv.ParseUint(os.Getenv(envCrashStart), 10, 64)
	if err != nil {
		return err
	}
	path := os.Getenv(envCrashPath)
	out := bufio.NewWriter(os.Stdout)
	switch mode {
	case "db":
		key, err := LoadClusterKey(os.Getenv(envCrashKey))
		if err != nil {
			return err
		}
		s, err := NewSealer(key)
		if err != nil {
			return err
		}
		db, err := Open(path, s)
		if err != nil {
			return err
		}
		for i := start; ; i++ {
			err := db.Update(func(tx *Tx) error {
				if err := tx.PutIKE(sampleIKE(i)); err != nil {
					return err
				}
				if err := tx.PutChild(sampleChild(i)); err != nil {
					return err
				}
				// Rewrites of older records exercise page reuse.
				if i > 0 {
					if err := tx.PutCounters(sampleChild(i/2).In.SPI, crashCounters(i)); err != nil {
						return err
					}
				}
				return tx.PutMeta("count", binary.BigEndian.AppendUint64(nil, i))
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(out, i)
			out.Flush()
		}
	case "raft":
		r, err := OpenRaftStores(path, nil)
		if err != nil {
			return err
		}
		const batch = 8
		for i := start; ; i += batch {
			logs := make([]*raft.Log, batch)
			for j := range logs {
				logs[j] = crashLog(i + uint64(j))
			}
			if err := r.Log.StoreLogs(logs); err != nil {
				return err
			}
			if err := r.Stable.SetUint64([]byte("LastIndexAcked"), i+batch-1); err != nil {
				return err
			}
			fmt.Fprintln(out, i+batch-1)
			out.Flush()
		}
	}
	return fmt.Errorf("unknown mode %q", mode)
}

func crashCounters(i uint64) sa.Counters {
	return sa.Counters{OutSeq: i, InSeq: i, InBytes: i * 100}
}

func crashLog(idx uint64) *raft.Log {
	return &raft.Log{Index: idx, Term: 1 + idx/1000, Type: raft.LogCommand, Data: seededBytes(idx, 64+int(idx%200))}
}

// crashRounds runs the child `rounds` times, killing it with SIGKILL at a
// random moment after its first acknowledged commit, and calls verify with
// the highest acknowledged index after each kill. next returns the index
// the next child starts from.
func crashRounds(t *testing.T, env []string, rounds int, next func() uint64, verify func(acked uint64)) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill delays seeded with %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for round := range rounds {
		start := next()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), append(env, envCrashStart+"="+strconv.FormatUint(start, 10))...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

		// The reader keeps the last acknowledged index; first is closed at
		// the first one.
		var (
			mu     sync.Mutex
			last   uint64
			gotAck bool
		)
		first := make(chan struct{})
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				n, err := strconv.ParseUint(sc.Text(), 10, 64)
				if err != nil {
					continue
				}
				mu.Lock()
				last = n
				if !gotAck {
					gotAck = true
					close(first)
				}
				mu.Unlock()
			}
		}()
		select {
		case <-first:
		case <-readDone:
		case <-time.After(30 * time.Second):
		}
		mu.Lock()
		ok := gotAck
		mu.Unlock()
		if !ok {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child made no commit: %s", round, stderr.String())
		}
		time.Sleep(time.Duration(5+rng.IntN(250)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-readDone // every line the child printed before it died
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child did not die by SIGKILL (%v): %s", round, err, stderr.String())
		}
		mu.Lock()
		acked := last
		mu.Unlock()
		if acked < start {
			t.Fatalf("round %d: acknowledged %d before its start %d", round, acked, start)
		}
		t.Logf("round %d: records %d..%d acknowledged before SIGKILL", round, start, acked)
		verify(acked)
	}
}

func TestCrashDB(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes for several seconds")
	}
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "cluster.key")
	if err := GenerateClusterKey(keyPath); err != nil {
		t.Fatal(err)
	}
	key, err := LoadClusterKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	s := testSealer(t, key)
	path := filepath.Join(dir, "sa.db")
	var count uint64
	haveCount := false
	next := func() uint64 {
		if !haveCount {
			return 0
		}
		return count + 1
	}
	verify := func(acked uint64) {
		db, err := Open(path, s)
		if err != nil {
			t.Fatalf("open after kill: %v", err)
		}
		defer db.Close()
		if err := db.Check(); err != nil {
			t.Fatalf("after kill: %v", err)
		}
		err = db.View(func(tx *Tx) error {
			m, err := tx.Meta("count")
			if err != nil {
				return fmt.Errorf("meta count: %w", err)
			}
			count = binary.BigEndian.Uint64(m)
			haveCount = true
			if count < acked {
				return fmt.Errorf("database holds records up to %d, but %d was acknowledged", count, acked)
			}
			for i := uint64(0); i <= acked; i++ {
				want := sampleIKE(i)
				got, err := tx.IKE(want.Cookies)
				if err != nil {
					return fmt.Errorf("acknowledged ike %d: %w", i, err)
				}
				if !reflect.DeepEqual(got, want) {
					return fmt.Errorf("acknowledged ike %d differs", i)
				}
				wc := sampleChild(i)
				gc, err := tx.Child(wc.In.SPI)
				if err != nil {
					return fmt.Errorf("acknowledged child %d: %w", i, err)
				}
				if !bytes.Equal(gc.In.EncrKey, wc.In.EncrKey) || gc.Reqid != wc.Reqid {
					return fmt.Errorf("acknowledged child %d differs", i)
				}
				// Record j merges counters (OutSeq j) into child j/2.
				if i > 0 && 2*i <= count && gc.Counters.OutSeq < 2*i {
					return fmt.Errorf("child %d: OutSeq %d went back", i, gc.Counters.OutSeq)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	crashRounds(t, []string{envCrashMode + "=db", envCrashPath + "=" + path, envCrashKey + "=" + keyPath}, 5, next, verify)
}

func TestCrashRaftLog(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes for several seconds")
	}
	dir := t.TempDir()
	var last uint64
	next := func() uint64 { return last + 1 }
	verify := func(acked uint64) {
		bo, err := bolt.Open(filepath.Join(dir, RaftDBFile), 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
		if err != nil {
			t.Fatalf("open raft.db after kill: %v", err)
		}
		err = bo.View(checkTx)
		bo.Close()
		if err != nil {
			t.Fatalf("raft.db after kill: %v", err)
		}
		r, err := OpenRaftStores(dir, nil)
		if err != nil {
			t.Fatalf("open raft stores after kill: %v", err)
		}
		defer r.Close()
		last, err = r.Log.LastIndex()
		if err != nil {
			t.Fatal(err)
		}
		if last < acked {
			t.Fatalf("log ends at %d, but %d was acknowledged", last, acked)
		}
		var l raft.Log
		for i := uint64(1); i <= last; i++ {
			if err := r.Log.GetLog(i, &l); err != nil {
				t.Fatalf("log %d (acknowledged up to %d): %v", i, acked, err)
			}
			want := crashLog(i)
			if l.Index != i || l.Term != want.Term || !bytes.Equal(l.Data, want.Data) {
				t.Fatalf("log %d differs", i)
			}
		}
		v, err := r.Stable.GetUint64([]byte("LastIndexAcked"))
		if err != nil || v < acked {
			t.Fatalf("stable LastIndexAcked = %d, %v; acknowledged %d", v, err, acked)
		}
	}
	crashRounds(t, []string{envCrashMode + "=raft", envCrashPath + "=" + dir}, 5, next, verify)
}
