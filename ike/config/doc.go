// Package config owns the IKE connection configuration of ikegw: the
// `connections:` part of ikegwd's YAML file, parsed strictly (unknown keys
// are errors) into typed, validated, defaulted values the IKEv1 engine uses
// as they are.
//
// Algorithms, identities and traffic selectors use strongSwan's spellings so
// operators can carry their swanctl knowledge over. Every error is an *Error
// naming the connection, child and field (and, from Load, the file and
// line). Secrets (PSKs) are read from a private file or the environment,
// never inline, and never appear in errors, logs or any printed or encoded
// form of a Config (see Secret).
//
// The package reads only the config file, PSK files and the environment,
// keeps no state, and imports nothing of ikegw except ike/sa.
//
// # Format
//
//	connections:
//	  - name: dc2                    # required; letters, digits, - _ .
//	    local_addrs: 192.0.2.10      # one address; default %any
//	    remote_addrs: 198.51.100.20  # one address or %any (responder only)
//	    local_port: 500              # default 500
//	    remote_port: 500             # default 500
//	    local_id: "@gw.example"      # default: the local address (pubkey: the certificate's subject DN)
//	    remote_id: "%any"            # default: the remote address (pubkey: %any); a DN: "C=CH, O=Example, CN=peer"
//	    auth: psk                    # default psk; pubkey: cert, key, cacerts, crls, send_cert
//	    psk_file: dc2.psk            # mode 0600 or stricter; relative to the config file
//	    psk_env: IKEGW_PSK_DC2       # or this, not both; psk: (inline) is refused
//	    aggressive: false            # Aggressive Mode (initiator uses it; responder accepts it only then)
//	    proposals: [aes256-sha256-modp2048, aes128-sha1-modp2048]  # the default
//	    legacy_algorithms: false     # allow 3des, modp1024, modp1536
//	    ike_lifetime: 8h             # default 8h; 10s..7d
//	    reauth_time: 0               # default 0 = ike_lifetime minus the engine's margin
//	    dpd_delay: 30s               # default 30s; 0 = off
//	    dpd_timeout: 150s            # default 150s
//	    dpd_action: clear            # none | clear (default) | hold | restart
//	    encap: false                 # force UDP encapsulation
//	    start_action: none           # none (default) | start
//	    keyingtries: 3               # default 3; 0 = forever
//	    retransmit: {timeout: 4s, tries: 5, base: 1.8}  # the defaults
//	    children:                    # at least one
//	      - name: net
//	        local_ts: [10.1.0.0/16]  # default: local address (dynamic if %any)
//	        remote_ts: ["10.2.0.0/16", "10.3.0.53/32[udp/53]"]
//	        esp_proposals: [aes256-sha256, aes128-sha1]  # the default; add a DH group for PFS
//	        mode: tunnel             # tunnel (default) | transport
//	        rekey_time: 1h           # default 1h
//	        life_time: 66m           # default rekey_time + 10%
//	        rekey_bytes: 0           # 0 = none; K/M/G/T suffixes (binary)
//	        life_bytes: 0            # default rekey_bytes + 10%
//	        start_action: none       # default: the connection's start_action
//
// Durations are Go durations (90s, 1h30m), days (1d) or plain seconds.
// Lists of strings may also be written as one comma-separated string.
package config
