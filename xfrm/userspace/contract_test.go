package userspace

import (
	"testing"

	"ikegw/xfrm"
	"ikegw/xfrm/xfrmtest"
)

func TestDataPlaneContract(t *testing.T) {
	xfrmtest.Run(t, func(t *testing.T) xfrm.DataPlane {
		e, err := New(Config{Sender: &wire{}, Device: newChanDevice("contract"), Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	})
}
