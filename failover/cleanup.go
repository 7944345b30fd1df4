package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"ikegw/failover/vip"
)

// Cleanup removes what a dead ikegwd may have left on a live machine
// (DESIGN.md "Daemon death is not node death"): first the virtual IPs (so
// the node stops answering ARP/ND for them at once), then the data plane's
// states and policies through flushDataPlane (nil to skip). Both steps run
// even if the first fails; the error joins both failures. Addresses other
// than vips are never touched, and a VIP that is not present is fine.
//
// Call it from `ikegwd cleanup` (the systemd unit's ExecStopPost) and at
// every start before the node joins the cluster.
func Cleanup(ctx context.Context, vips []vip.VIP, flushDataPlane func(context.Context) error) error {
	return cleanup(ctx, vip.Config{VIPs: vips, Log: slog.Default()}, flushDataPlane)
}

func cleanup(ctx context.Context, cfg vip.Config, flushDataPlane func(context.Context) error) error {
	log := cfg.Log
	var errs []error
	if len(cfg.VIPs) > 0 {
		m, err := vip.New(cfg)
		if err != nil {
			errs = append(errs, fmt.Errorf("failover: cleanup: %w", err))
		} else {
			if err := m.Release(ctx); err != nil {
				errs = append(errs, fmt.Errorf("failover: cleanup: %w", err))
			}
			m.Close()
		}
	}
	if flushDataPlane != nil {
		if err := flushDataPlane(ctx); err != nil {
			errs = append(errs, fmt.Errorf("failover: cleanup: flush data plane: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		log.Error("failover: cleanup incomplete", "err", err)
		return err
	}
	log.Info("failover: cleanup done", "vips", len(cfg.VIPs), "data_plane", flushDataPlane != nil)
	return nil
}
