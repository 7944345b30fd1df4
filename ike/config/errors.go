package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors wrapped by *Error, for errors.Is.
var (
	ErrUnknownKey   = errors.New("unknown key")
	ErrNotSupported = errors.New("not supported")
	ErrInvalid      = errors.New("invalid value")
	ErrMissing      = errors.New("required")
	ErrInsecure     = errors.New("insecure")
)

// Error is a configuration error. Its text names where the problem is, as
// precisely as known, then what is wrong:
//
//	config: connection "dc2": proposals[1] "aes999-sha1": unknown cipher "aes999"
//	config: /etc/ikegw/ikegw.yaml:14: connection "dc2": child "net": local_ts[0] "10.1.0.1/16": ...
//
// File and line appear for Load; Parse reports only the line of YAML syntax
// errors and of errors outside any connection. It never contains a secret.
type Error struct {
	File       string // config file (Load only)
	Line       int    // YAML line, 0 if not known
	Connection string // connection name, or "connections[i]" when it has none
	Child      string // child name, or "children[i]" when it has none
	Field      string // key path within the connection or child, e.g. "proposals[1]", "retransmit.base"
	Value      string // the offending value, quoted in the text; never a secret
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	} else if e.Line > 0 && e.Connection == "" {
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Connection != "" {
		if strings.HasPrefix(e.Connection, "connections[") {
			b.WriteString(e.Connection + ": ")
		} else {
			b.WriteString("connection " + strconv.Quote(e.Connection) + ": ")
		}
	}
	if e.Child != "" {
		if strings.HasPrefix(e.Child, "children[") {
			b.WriteString(e.Child + ": ")
		} else {
			b.WriteString("child " + strconv.Quote(e.Child) + ": ")
		}
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		if e.Value != "" {
			b.WriteString(" " + strconv.Quote(e.Value))
		}
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("invalid")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// kindError is an error whose text is its own message and which matches a
// sentinel with errors.Is, without repeating the sentinel's text.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func errf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
