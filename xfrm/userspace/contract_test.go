package userspace

import (
	"testing"

	"ikegw/xfrm"
	"ikegw/xfrm/xfrmtest"
)

func TestDataPlaneContract(t *testing.T) {
	xfrmtest.Run(t, newContractEngine)
	t.Run("Stager", func(t *testing.T) { xfrmtest.RunStager(t, newContractEngine) })
}

func newContractEngine(t *testing.T) xfrm.DataPlane {
	e, err := New(Config{Sender: &wire{}, Device: newChanDevice("contract"), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}
