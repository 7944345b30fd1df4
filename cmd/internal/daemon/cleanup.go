package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"ikegw/xfrm/kernel"
)

// Cleanup removes what a dead ikegwd left behind on a live machine
// (DESIGN.md "Daemon death is not node death"): its VIPs, which the kernel
// keeps answering ARP for, and, with the kernel data plane, the XFRM states
// and policies it owns, which would go on encrypting with old sequence
// numbers. The userspace data plane's SAs die with the process. It is run
// by the supervisor the moment the daemon exits, by the systemd unit's
// ExecStopPost, and by every start before joining.
func Cleanup(ctx context.Context, cfg *Config, log *slog.Logger) error {
	var errs []error
	if len(cfg.Failover.VIPs) > 0 {
		v, err := newVIPs(cfg, log)
		if err != nil {
			errs = append(errs, err)
		} else {
			if err := v.Release(ctx); err != nil {
				errs = append(errs, fmt.Errorf("releasing VIPs: %w", err))
			}
			v.Close()
		}
	}
	if cfg.Dataplane.Kind == "kernel" || (cfg.Dataplane.Kind == "auto" && kernel.Probe(ctx) == nil) {
		k, err := kernel.New(ctx, kernel.Config{Logger: log})
		if err != nil {
			errs = append(errs, fmt.Errorf("kernel data plane: %w", err))
		} else {
			if err := k.Flush(ctx); err != nil {
				errs = append(errs, fmt.Errorf("flushing owned XFRM states and policies: %w", err))
			}
			k.Close()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	log.Info("cleanup done: no VIP and no owned SA left on this machine")
	return nil
}
