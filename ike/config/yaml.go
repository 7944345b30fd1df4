package config

import (
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxAliasDepth bounds alias chains while resolving nodes.
const maxAliasDepth = 32

func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < maxAliasDepth; i++ {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return "a value " + strconv.Quote(clip(n.Value))
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	return "an unknown YAML node"
}

// clip shortens a value quoted in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// fieldErr is a decode problem at a key of a mapping.
type fieldErr struct {
	field string
	line  int
	err   error
}

// decodeStrict decodes mapping n into the struct out points to, one key at
// a time: keys are the struct fields' yaml tags; an unknown, duplicated or
// empty key is an error naming it. Fields of type *yaml.Node get the value
// node itself (decoded later by the caller).
func decodeStrict(n *yaml.Node, out any) *fieldErr {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		line := 0
		desc := "nothing"
		if n != nil {
			line, desc = n.Line, kindName(n)
		}
		return &fieldErr{line: line, err: errf(ErrInvalid, "expected a mapping of keys, found %s", desc)}
	}
	v := reflect.ValueOf(out).Elem()
	t := v.Type()
	idx := map[string]int{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag != "" && tag != "-" {
			idx[tag] = i
			names = append(names, tag)
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolve(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			return &fieldErr{line: n.Content[i].Line, err: errf(ErrInvalid, "keys must be plain names, found %s", kindName(n.Content[i]))}
		}
		key := k.Value
		if key == "<<" {
			return &fieldErr{field: key, line: k.Line, err: errf(ErrNotSupported, "YAML merge keys are not supported; write the keys out")}
		}
		fi, ok := idx[key]
		if !ok {
			msg := errf(ErrUnknownKey, "unknown key %q", clip(key))
			if s := suggest(key, names); s != "" {
				msg = errf(ErrUnknownKey, "unknown key %q (did you mean %q?)", clip(key), s)
			}
			return &fieldErr{line: k.Line, err: msg}
		}
		if prev, dup := seen[key]; dup {
			return &fieldErr{field: key, line: k.Line, err: errf(ErrInvalid, "key given twice (first on line %d)", prev)}
		}
		seen[key] = k.Line
		rv := resolve(val)
		if rv == nil {
			return &fieldErr{field: key, line: val.Line, err: errf(ErrInvalid, "alias chain too deep")}
		}
		if rv.Kind == yaml.ScalarNode && rv.Tag == "!!null" {
			return &fieldErr{field: key, line: val.Line, err: errf(ErrInvalid, "no value given")}
		}
		f := v.Field(fi)
		if f.Type() == reflect.TypeOf((*yaml.Node)(nil)) {
			f.Set(reflect.ValueOf(rv))
			continue
		}
		if err := rv.Decode(f.Addr().Interface()); err != nil {
			var te *yaml.TypeError
			if errors.As(err, &te) {
				err = errf(ErrInvalid, "expected %s, found %s", typeWant(f.Type()), kindName(rv))
			}
			return &fieldErr{field: key, line: val.Line, err: err}
		}
	}
	return nil
}

func typeWant(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32, reflect.Uint16:
		return "an integer"
	case reflect.Float64, reflect.Float32:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	}
	return "a " + t.String()
}

// suggest returns the known key closest to key when it is a likely typo:
// one edit away (two for keys longer than five characters), counting a
// swap of neighbours as one edit.
func suggest(key string, names []string) string {
	limit := 1
	if len(key) > 5 {
		limit = 2
	}
	best, bestD := "", limit+1
	for _, n := range names {
		if d := editDistance(strings.ToLower(key), n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance (Levenshtein plus
// transpositions of neighbours).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// duration is a YAML duration: a Go duration ("90s", "1h30m"), a number
// of days ("2d"), or a plain integer of seconds (strongSwan's spelling).
type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errf(ErrInvalid, "expected a duration such as 30s, 10m, 8h or 1d, found %s", kindName(n))
	}
	v, err := parseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return errf(ErrInvalid, "%q: %v", clip(n.Value), err)
	}
	*d = duration(v)
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if strings.HasPrefix(s, "-") {
		return 0, errors.New("negative duration")
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		if n > uint64(math.MaxInt64/int64(time.Second)) {
			return 0, errors.New("duration too long")
		}
		return time.Duration(n) * time.Second, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 64)
		if err != nil {
			return 0, errors.New("not a duration (write e.g. 30s, 10m, 8h or 1d)")
		}
		if n > uint64(math.MaxInt64/int64(24*time.Hour)) {
			return 0, errors.New("duration too long")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("not a duration (write e.g. 30s, 10m, 8h or 1d)")
	}
	return d, nil
}

// byteCount is a YAML byte count: an integer, optionally with a binary
// suffix K, M, G or T (strongSwan's spelling: 1K = 1024).
type byteCount uint64

func (b *byteCount) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errf(ErrInvalid, "expected a byte count such as 500M or 4G, found %s", kindName(n))
	}
	s := strings.TrimSpace(n.Value)
	mult := uint64(1)
	if s != "" {
		switch strings.ToUpper(s[len(s)-1:]) {
		case "K":
			mult = 1 << 10
		case "M":
			mult = 1 << 20
		case "G":
			mult = 1 << 30
		case "T":
			mult = 1 << 40
		}
		if mult != 1 {
			s = s[:len(s)-1]
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > math.MaxUint64/mult {
		return errf(ErrInvalid, "%q is not a byte count such as 1000000, 500M or 4G", clip(n.Value))
	}
	*b = byteCount(v * mult)
	return nil
}

// strList is a list of strings, written as a YAML list or a single
// comma-separated string (swanctl's spelling).
type strList []string

func (l *strList) UnmarshalYAML(n *yaml.Node) error {
	var items []*yaml.Node
	switch n.Kind {
	case yaml.ScalarNode:
		items = []*yaml.Node{n}
	case yaml.SequenceNode:
		items = n.Content
	default:
		return errf(ErrInvalid, "expected a list of strings, found %s", kindName(n))
	}
	var out []string
	for _, it := range items {
		it = resolve(it)
		if it == nil || it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
			desc := "nothing"
			if it != nil {
				desc = kindName(it)
			}
			return errf(ErrInvalid, "expected a list of strings, found an item that is %s", desc)
		}
		for _, part := range strings.Split(it.Value, ",") {
			out = append(out, strings.TrimSpace(part))
		}
	}
	*l = out
	return nil
}
