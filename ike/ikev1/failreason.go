package ikev1

// FailReason classifies why a phase 1 or Quick Mode exchange failed, for
// the metrics (handshake failures by reason).
type FailReason uint8

// Failure reasons. The set is closed so that a metric label can never grow
// without bound from peer input.
const (
	FailTimeout     FailReason = iota // did not complete within the half-open / exchange timeout
	FailNoResponse                    // the peer stopped answering our retransmissions
	FailNoProposal                    // no acceptable proposal (either side)
	FailAuth                          // authentication failed (PSK, signature, certificate, identity)
	FailPeerRefused                   // the peer answered with an error notify
	FailKeyExchange                   // a bad or missing KE payload
	FailSelectors                     // traffic selectors not acceptable
	FailProtocol                      // a reply that breaks the protocol (missing payloads, changed choices)
	FailInternal                      // a local error (encryption, unusable suite)
	NumFailReasons
)

var failReasonNames = [NumFailReasons]string{
	"timeout", "no_response", "no_proposal", "auth", "peer_refused", "key_exchange", "selectors", "protocol", "internal",
}

func (r FailReason) String() string {
	if r < NumFailReasons {
		return failReasonNames[r]
	}
	return "unknown"
}

func (e *Engine) phase1Fail(r FailReason) {
	e.stats.Phase1Failed++
	e.stats.Phase1FailedBy[r]++
}

func (e *Engine) phase2Fail(r FailReason) {
	e.stats.Phase2Failed++
	e.stats.Phase2FailedBy[r]++
}
