package main

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"ikegw/ike/pki"
)

// certsIKECmd makes a lab CA and IKE gateway / peer certificates for
// connections with auth: pubkey (and for the strongSwan peers of a lab),
// and CRLs revoking some of them.
func certsIKECmd() *cobra.Command {
	var dir, key string
	var revoke []string
	c := &cobra.Command{
		Use:   "ike NAME[=SAN,SAN...] ...",
		Short: "Create an IKE lab CA (if DIR has none) and an IKE certificate for each NAME that has none (keys 0600)",
		Long: `Create an IKE lab CA (ca.pem, ca.key) in DIR unless it exists, and for each
NAME without a certificate NAME.pem and NAME.key (0600), signed by that CA,
with the subject "O=ikegw lab, CN=NAME" and the subjectAltNames after "=":
IP addresses, e-mail addresses (with "@") and DNS names; without any, NAME
is the DNS name. Existing files are never overwritten.

--revoke writes DIR/ca.crl, a CRL of the lab CA revoking the named
certificates (it replaces an older ca.crl; --revoke "" writes an empty one).`,
		Example: `  ikegwd certs ike --dir /etc/ikegw/ike --key ecdsa256 gw=gw.example.net,192.0.2.1 branch1=198.51.100.7
  ikegwd certs ike --dir /etc/ikegw/ike --revoke branch1`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !cmd.Flags().Changed("revoke") {
				return fmt.Errorf("certs ike: name at least one certificate (NAME[=SAN,...]) or --revoke")
			}
			var certs []pki.LabCert
			for _, a := range args {
				lc, err := parseLabCert(a)
				if err != nil {
					return err
				}
				if slices.ContainsFunc(certs, func(o pki.LabCert) bool { return o.Name == lc.Name }) {
					return fmt.Errorf("certs ike: %q named twice", lc.Name)
				}
				certs = append(certs, lc)
			}
			out := cmd.OutOrStdout()
			if len(certs) > 0 {
				created, err := pki.WriteLabCerts(dir, pki.KeyType(key), certs)
				if err != nil {
					return fmt.Errorf("certs ike: %w", err)
				}
				for _, lc := range certs {
					p := filepath.Join(dir, lc.Name+".pem")
					cs, err := pki.LoadCerts(p)
					if err != nil {
						return fmt.Errorf("certs ike: %w", err)
					}
					state := "exists, unchanged"
					if slices.Contains(created, p) {
						state = "issued now"
					}
					c := cs[0]
					var sans []string
					sans = append(sans, c.DNSNames...)
					for _, ip := range c.IPAddresses {
						sans = append(sans, ip.String())
					}
					sans = append(sans, c.EmailAddresses...)
					fmt.Fprintf(out, "%s: %s (%s): subject %q, SANs %s, valid until %s\n", lc.Name, p, state,
						pki.DNString(c.RawSubject), strings.Join(sans, ","), c.NotAfter.UTC().Format("2006-01-02"))
				}
				fmt.Fprintf(out, "CA: %s (cacerts of every connection that trusts these certificates)\n", filepath.Join(dir, "ca.pem"))
			}
			if cmd.Flags().Changed("revoke") {
				var names []string
				for _, n := range revoke {
					if n != "" {
						names = append(names, n)
					}
				}
				p, err := pki.WriteLabCRL(dir, names)
				if err != nil {
					return fmt.Errorf("certs ike: --revoke: %w", err)
				}
				fmt.Fprintf(out, "CRL: %s revokes %d certificate(s) %s (crls of the connections that trust the CA)\n", p, len(names), strings.Join(names, ","))
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "/etc/ikegw/ike", "certificate directory (CA and certificate files)")
	c.Flags().StringVar(&key, "key", string(pki.ECDSA256), "key type of new keys: rsa2048, ecdsa256 or ecdsa384")
	c.Flags().StringSliceVar(&revoke, "revoke", nil, "write DIR/ca.crl revoking these certificates (by NAME)")
	return c
}

// parseLabCert reads NAME[=SAN,SAN...].
func parseLabCert(a string) (pki.LabCert, error) {
	name, sans, hasSANs := strings.Cut(a, "=")
	lc := pki.LabCert{Name: name}
	if name == "" || (hasSANs && sans == "") {
		return lc, fmt.Errorf("certs ike: %q: want NAME or NAME=SAN[,SAN...]", a)
	}
	if !hasSANs {
		return lc, nil
	}
	for _, s := range strings.Split(sans, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == "":
			return lc, fmt.Errorf("certs ike: %q: empty subjectAltName", a)
		case net.ParseIP(s) != nil:
			lc.IPs = append(lc.IPs, net.ParseIP(s))
		case strings.Contains(s, "@"):
			if u, h, _ := strings.Cut(s, "@"); u == "" || h == "" || strings.ContainsAny(s, " \t") {
				return lc, fmt.Errorf("certs ike: %q: %q is not an e-mail address", a, s)
			}
			lc.Emails = append(lc.Emails, s)
		default:
			if strings.ContainsAny(s, " \t/\\:") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") {
				return lc, fmt.Errorf("certs ike: %q: %q is neither an IP address, an e-mail address nor a DNS name", a, s)
			}
			lc.DNS = append(lc.DNS, s)
		}
	}
	return lc, nil
}
