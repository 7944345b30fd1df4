package lab

import (
	"errors"
	"fmt"
	"strings"
)

// ErrViciSyntax is wrapped by every error ParseViciRaw returns.
var ErrViciSyntax = errors.New("vici raw: syntax error")

// ViciMessage is one message of `swanctl ... --raw` output: a name such as
// "list-sa event" or "initiate reply" and its body.
type ViciMessage struct {
	Name string
	Body *ViciSection
}

// ViciSection is a vici section: entries in the order charon sent them.
type ViciSection struct {
	Entries []ViciEntry
}

// ViciEntry is one key of a section: exactly one of a value, a list or a
// subsection, as Kind says.
type ViciEntry struct {
	Key     string
	Kind    ViciKind
	Value   string
	List    []string
	Section *ViciSection
}

// ViciKind tells what a ViciEntry holds.
type ViciKind uint8

const (
	ViciValue ViciKind = iota + 1
	ViciList
	ViciSub
)

func (k ViciKind) String() string {
	switch k {
	case ViciValue:
		return "value"
	case ViciList:
		return "list"
	case ViciSub:
		return "section"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Value returns the value of key, if key holds a value.
func (s *ViciSection) Value(key string) (string, bool) {
	for _, e := range s.Entries {
		if e.Key == key && e.Kind == ViciValue {
			return e.Value, true
		}
	}
	return "", false
}

// List returns the list under key, if key holds a list.
func (s *ViciSection) List(key string) ([]string, bool) {
	for _, e := range s.Entries {
		if e.Key == key && e.Kind == ViciList {
			return e.List, true
		}
	}
	return nil, false
}

// Sub returns the subsection under key, or nil.
func (s *ViciSection) Sub(key string) *ViciSection {
	for _, e := range s.Entries {
		if e.Key == key && e.Kind == ViciSub {
			return e.Section
		}
	}
	return nil
}

// ParseViciRaw parses the output of swanctl's --raw option: one message a
// line, `name {key=value key=[a b] sub {...}}`.
//
// The format is not escaped: a value is printed as it is and may contain
// spaces and braces ("class=pre-shared key", "msg=closing CHILD_SA c{1}
// with ..."). A value therefore ends only where what follows can continue
// the section: a space and then `key=` or `key {`, or closing braces that
// end the line or are followed by such an entry. Lines that are not
// messages (swanctl's own text around them) are an error; empty lines are
// skipped. Values that are not printable are shown by swanctl as hex and
// kept as that text.
func ParseViciRaw(out string) ([]ViciMessage, error) {
	var msgs []ViciMessage
	for i, line := range strings.Split(out, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		m, err := parseViciLine(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrViciSyntax, i+1, err)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func parseViciLine(line string) (ViciMessage, error) {
	open := strings.Index(line, " {")
	if open <= 0 {
		return ViciMessage{}, fmt.Errorf("no `name {` at the start of %q", clip(line))
	}
	p := &viciParser{s: line, i: open + 2, depth: 1}
	body, err := p.section()
	if err != nil {
		return ViciMessage{}, err
	}
	if p.i != len(p.s) {
		return ViciMessage{}, fmt.Errorf("column %d: trailing text %q", p.i+1, clip(p.s[p.i:]))
	}
	return ViciMessage{Name: line[:open], Body: body}, nil
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

type viciParser struct {
	s     string
	i     int
	depth int // sections open at i
}

func isKeyByte(c byte) bool {
	return c > ' ' && c < 0x7f && c != '=' && c != '{' && c != '}' && c != '[' && c != ']'
}

// keyAt returns the length of the key starting at j and what follows it:
// '=' for `key=`, '{' for `key {`, 0 if s[j:] does not start an entry.
func (p *viciParser) keyAt(j int) (int, byte) {
	k := j
	for k < len(p.s) && isKeyByte(p.s[k]) {
		k++
	}
	if k == j || k >= len(p.s) {
		return 0, 0
	}
	if p.s[k] == '=' {
		return k - j, '='
	}
	if p.s[k] == ' ' && k+1 < len(p.s) && p.s[k+1] == '{' {
		return k - j, '{'
	}
	return 0, 0
}

// endsValue reports whether a value inside depth open sections may end at
// j: what follows closes sections (never more than are open) and then
// either ends the line with all sections closed, or starts another entry
// (" key=" / " key {") in a section still open.
func (p *viciParser) endsValue(j, depth int) bool {
	for ; j < len(p.s) && p.s[j] == '}'; j++ {
		if depth == 0 {
			return false
		}
		depth--
	}
	if j == len(p.s) {
		return depth == 0
	}
	if p.s[j] != ' ' || depth == 0 {
		return false
	}
	_, kind := p.keyAt(j + 1)
	return kind != 0
}

// section parses entries up to and including the closing '}'.
func (p *viciParser) section() (*ViciSection, error) {
	sec := &ViciSection{}
	for {
		for p.i < len(p.s) && p.s[p.i] == ' ' {
			p.i++
		}
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("column %d: missing `}`", p.i+1)
		}
		if p.s[p.i] == '}' {
			p.i++
			p.depth--
			return sec, nil
		}
		n, kind := p.keyAt(p.i)
		if kind == 0 {
			return nil, fmt.Errorf("column %d: expected `key=`, `key {` or `}` at %q", p.i+1, clip(p.s[p.i:]))
		}
		key := p.s[p.i : p.i+n]
		p.i += n
		switch kind {
		case '{':
			p.i += 2 // " {"
			p.depth++
			sub, err := p.section()
			if err != nil {
				return nil, fmt.Errorf("in %q: %w", key, err)
			}
			sec.Entries = append(sec.Entries, ViciEntry{Key: key, Kind: ViciSub, Section: sub})
		case '=':
			p.i++
			if p.i < len(p.s) && p.s[p.i] == '[' {
				end := strings.IndexByte(p.s[p.i:], ']')
				if end < 0 {
					return nil, fmt.Errorf("column %d: list %q has no `]`", p.i+1, key)
				}
				items := strings.Fields(p.s[p.i+1 : p.i+end])
				if items == nil {
					items = []string{}
				}
				p.i += end + 1
				sec.Entries = append(sec.Entries, ViciEntry{Key: key, Kind: ViciList, List: items})
				continue
			}
			start := p.i
			for !p.endsValue(p.i, p.depth) {
				if p.i >= len(p.s) {
					return nil, fmt.Errorf("column %d: value of %q: missing `}`", start+1, key)
				}
				p.i++
			}
			sec.Entries = append(sec.Entries, ViciEntry{Key: key, Kind: ViciValue, Value: p.s[start:p.i]})
		}
	}
}
