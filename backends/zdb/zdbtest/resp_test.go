package zdbtest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestReadRequest(t *testing.T) {
	for _, c := range []struct {
		in   string
		args []string
		err  string
	}{
		{in: "*1\r\n$4\r\nPING\r\n", args: []string{"PING"}},
		{in: "*2\r\n$3\r\nGET\r\n$0\r\n\r\n", args: []string{"GET", ""}},
		// atoi: trailing junk ignored, the two bytes after a payload unchecked.
		{in: "*1junk\r\n$2xx\r\nabZZ", args: []string{"ab"}},
		{in: "*1\n$1\nx\r\n", args: []string{"x"}},
		{in: "PING\r\n", err: "Malformed request, array expected"},
		{in: "\r\n", err: "Malformed request, array expected"},
		{in: "*0\r\n", err: "Missing arguments"},
		{in: "*-3\r\n", err: "Missing arguments"},
		{in: "*1025\r\n", err: "Too many arguments"},
		{in: "*1\r\n:1\r\n", err: "Malformed query string"},
		{in: "*1\r\n$-1\r\n", err: "Malformed query string"},
		{in: "*1\r\n$8388609\r\n", err: "Payload too big"},
		{in: "*1\r\n$99999999999999999999999\r\n", err: "Payload too big"},
	} {
		args, err := ReadRequest(bufio.NewReader(bytes.NewBufferString(c.in)))
		if c.err != "" {
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Reply != c.err || !pe.Close {
				t.Errorf("%q: got %v, want protocol error %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		var got []string
		for _, a := range args {
			got = append(got, string(a))
		}
		if len(got) != len(c.args) || (len(got) > 0 && got[0] != c.args[0]) || len(got) > 1 && got[1] != c.args[1] {
			t.Errorf("%q: got %q, want %q", c.in, got, c.args)
		}
	}
	// A clean end between requests is io.EOF; inside one it is not.
	if _, err := ReadRequest(bufio.NewReader(bytes.NewReader(nil))); err != io.EOF {
		t.Errorf("empty input: %v", err)
	}
	if _, err := ReadRequest(bufio.NewReader(bytes.NewBufferString("*2\r\n$3\r\nGET\r\n"))); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated request: %v", err)
	}
	if _, err := ReadRequest(bufio.NewReader(bytes.NewReader(bytes.Repeat([]byte{'*'}, maxLine+10)))); !errors.Is(err, ErrLineTooLong) {
		t.Errorf("endless header line: %v", err)
	}
}

// FuzzReadRequest checks that no input makes the parser panic or accept
// something it cannot give back: a parsed request re-encodes to bytes that
// parse to the same arguments.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"*1\r\n$4\r\nPING\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
		"PING\r\n", "*0\r\n", "*1\r\n$8388609\r\n", "*2\r\n$1\r\na\r\n$-5\r\n",
		"*1 \r\n$ 3\r\nabc\r\n", "*+1\r\n$+0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for i := 0; i < 4; i++ {
			args, err := ReadRequest(r)
			if err != nil {
				var pe *ProtocolError
				if errors.As(err, &pe) && (pe.Reply == "" || !pe.Close) {
					t.Fatalf("protocol error without reply or close: %+v", pe)
				}
				return
			}
			if len(args) == 0 || len(args) > MaxArgs {
				t.Fatalf("accepted %d arguments", len(args))
			}
			again, err := ReadRequest(bufio.NewReader(bytes.NewReader(EncodeRequest(args...))))
			if err != nil || len(again) != len(args) {
				t.Fatalf("re-encoded request does not parse: %v", err)
			}
			for j := range args {
				if !bytes.Equal(args[j], again[j]) {
					t.Fatalf("argument %d changed on re-encoding", j)
				}
			}
		}
	})
}

func TestCommandPrefixMatching(t *testing.T) {
	for in, want := range map[string]string{
		"GE": "GET", "get": "GET", "s": "SET", "SCANX": "SCANX", "nsi": "NSINFO",
		"": "*", "GET\x00junk": "GET",
	} {
		c := lookup([]byte(in))
		if c == nil || c.name != want {
			t.Errorf("lookup(%q) = %v, want %s", in, c, want)
		}
	}
	for _, in := range []string{"GETX", "HELLO", "CLIENT", "FOO"} {
		if c := lookup([]byte(in)); c != nil {
			t.Errorf("lookup(%q) = %s, want none", in, c.name)
		}
	}
}
