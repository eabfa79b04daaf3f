package zdbtest

import (
	"bufio"
	"errors"
	"io"
	"strconv"
)

// Limits of the request framing, as 0-db v2.0.7 enforces them.
const (
	// MaxPayload is the largest argument: 8 MiB. One byte more and the
	// server replies "-Payload too big" and closes the connection.
	MaxPayload = 8 << 20
	// MaxArgs is the most arguments one request may carry (from the 0-db
	// source; not seen on the wire).
	MaxArgs = 1024
	// MaxKey is the longest key.
	MaxKey = 255
	// maxLine bounds a header line; 0-db's fixed read buffer does the same
	// job. Not in the record: a longer header line closes the connection.
	maxLine = 64 << 10
)

// ProtocolError is a request the server refuses at the framing level. Reply
// is the error text sent back (after '-'); Close says whether the server
// then drops the connection.
type ProtocolError struct {
	Reply string
	Close bool
}

func (e *ProtocolError) Error() string { return "zdb protocol: " + e.Reply }

// ErrLineTooLong is returned when a header line has no end in sight.
var ErrLineTooLong = errors.New("zdb protocol: header line too long")

// ReadRequest reads one request: an array of bulk strings. It returns the
// arguments, a *ProtocolError for a request 0-db refuses, or the reader's
// error (io.EOF when the client went away between requests).
//
// The framing follows 0-db's parser: a header line is taken up to its '\n'
// and its number read the way C's atoi does (leading blanks, a sign, digits,
// and whatever follows ignored); a bulk's payload is its length plus two
// bytes, and those two are not checked to be CRLF.
func ReadRequest(r *bufio.Reader) ([][]byte, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	if line[0] != '*' {
		return nil, &ProtocolError{Reply: "Malformed request, array expected", Close: true}
	}
	argc := atoi(line[1:])
	if argc <= 0 {
		// 0-db answers "Missing arguments" for *0; the source then leaves
		// the connection in a state that can only repeat the error, so the
		// double closes it.
		return nil, &ProtocolError{Reply: "Missing arguments", Close: true}
	}
	if argc > MaxArgs {
		return nil, &ProtocolError{Reply: "Too many arguments", Close: true}
	}
	args := make([][]byte, 0, argc)
	for i := int64(0); i < argc; i++ {
		line, err := readLine(r)
		if err != nil {
			return nil, noEOF(err)
		}
		if line[0] != '$' {
			return nil, &ProtocolError{Reply: "Malformed query string", Close: true}
		}
		n := atoi(line[1:])
		if n > MaxPayload {
			return nil, &ProtocolError{Reply: "Payload too big", Close: true}
		}
		if n < 0 {
			return nil, &ProtocolError{Reply: "Malformed query string", Close: true}
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, noEOF(err)
		}
		args = append(args, buf[:n:n])
	}
	return args, nil
}

// noEOF turns an EOF inside a request into ErrUnexpectedEOF, so io.EOF
// alone means a clean end between requests.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > maxLine {
			return nil, ErrLineTooLong
		}
		if err == nil {
			return line, nil
		}
		if err != bufio.ErrBufferFull {
			if len(line) > 0 {
				return nil, noEOF(err)
			}
			return nil, err
		}
	}
}

// atoi reads a number the way C's atoi does, clamping instead of
// overflowing.
func atoi(b []byte) int64 {
	i := 0
	for i < len(b) && (b[i] == ' ' || (b[i] >= '\t' && b[i] <= '\r')) {
		i++
	}
	neg := false
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		neg = b[i] == '-'
		i++
	}
	var n int64
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if n > (1<<62)/10 {
			n = 1 << 62
			continue
		}
		n = n*10 + int64(b[i]-'0')
	}
	if neg {
		return -n
	}
	return n
}

// EncodeRequest writes args as a RESP array of bulk strings, the way every
// Redis client sends a command.
func EncodeRequest(args ...[]byte) []byte {
	out := []byte("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		out = append(out, '$')
		out = strconv.AppendInt(out, int64(len(a)), 10)
		out = append(out, "\r\n"...)
		out = append(out, a...)
		out = append(out, "\r\n"...)
	}
	return out
}

// Reply builders. Each returns the exact bytes 0-db sends.

func status(s string) []byte   { return []byte("+" + s + "\r\n") }
func errReply(s string) []byte { return []byte("-" + s + "\r\n") }
func integer(n int64) []byte   { return []byte(":" + strconv.FormatInt(n, 10) + "\r\n") }

var nilBulk = []byte("$-1\r\n")

func bulk(b []byte) []byte {
	out := []byte("$" + strconv.Itoa(len(b)) + "\r\n")
	out = append(out, b...)
	return append(out, "\r\n"...)
}

func arrayHeader(n int) []byte { return []byte("*" + strconv.Itoa(n) + "\r\n") }
