package role

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRandomSchedules drives the machine with random leadership changes,
// quorum outages and takeover failures, then checks the call log:
//   - every claim happens after an activate, with no standby in between;
//   - after a claim, the VIPs are released before the next standby;
//   - OnActivate and OnStandby alternate (one standby per activate);
//   - OnActive only right after a successful claim;
//   - when the machine has stopped, nothing is held;
//   - with OnHandover (seeds 5-8): it comes with the VIPs released, while
//     a standby is owed, and that standby follows the step down.
func TestRandomSchedules(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
	for _, seed := range seeds {
		rng := rand.New(rand.NewPCG(seed, 99))
		var handoverRec atomic.Pointer[recorder] // h.rec, once start made it
		var mu sync.Mutex
		failNext := false
		h := start(t, Config{RetryBackoff: 20 * time.Millisecond, HandoverHold: 30 * time.Millisecond}, func(ctx context.Context) error {
			mu.Lock()
			f := failNext
			mu.Unlock()
			if f {
				return errors.New("takeover failed")
			}
			select { // takeover takes a little while
			case <-time.After(time.Duration(rand.IntN(3)) * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			return nil
		}, func(cb *Callbacks) {
			if seed > 4 {
				cb.OnHandover = func() { handoverRec.Load().add("handover") }
			}
		})
		handoverRec.Store(h.rec)
		term := uint64(0)
		for range 60 {
			switch rng.IntN(7) {
			case 0, 1:
				term++
				h.lead.elect(term, rng.IntN(4) != 0)
			case 2:
				h.lead.lose(rng.IntN(4) != 0)
			case 3:
				h.lead.setVerify(verifyBlock)
			case 4:
				h.lead.setVerify(verifyOK)
			case 5:
				mu.Lock()
				failNext = !failNext
				mu.Unlock()
			case 6:
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = h.m.Handover(ctx)
				cancel()
			}
			time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		}
		h.stop()
		if h.vips.isHeld() {
			t.Fatalf("seed %d: VIPs held after Run returned", seed)
		}
		checkLog(t, seed, h.rec.all())
	}
}

func checkLog(t *testing.T, seed uint64, calls []string) {
	t.Helper()
	activated, held, claimedOK := false, false, false
	handingOver, steppedDown := false, false
	for i, c := range calls {
		fail := func(why string) {
			t.Fatalf("seed %d: call %d %q: %s\n%v", seed, i, c, why, calls)
		}
		switch c {
		case "activate":
			if activated {
				fail("second activate without a standby")
			}
			activated, claimedOK = true, false
		case "claim":
			if !activated {
				fail("claim without an activate")
			}
			held, claimedOK = true, true
		case "active":
			if !claimedOK || !held {
				fail("OnActive without a claim")
			}
			claimedOK = false
		case "release":
			held, claimedOK = false, false
		case "standby":
			if !activated {
				fail("standby without an activate")
			}
			if held {
				fail("standby while the VIPs are still held")
			}
			if handingOver && !steppedDown {
				fail("a handover's standby before its step down")
			}
			activated, handingOver = false, false
		case "stepdown":
			if held {
				fail("step down while holding the VIPs")
			}
			steppedDown = true
		case "handover":
			if !activated || held || handingOver {
				fail("OnHandover without an owed standby, or with the VIPs held")
			}
			handingOver, steppedDown = true, false
		}
	}
	if activated || held {
		t.Fatalf("seed %d: ended activated=%v held=%v\n%v", seed, activated, held, calls)
	}
}
