// Package failover owns the active/standby role machine: virtual IPs,
// gratuitous ARP and unsolicited NA, self-fencing, and the takeover (SA
// install with jumped sequence numbers, counter sync, timers resumed).
package failover
