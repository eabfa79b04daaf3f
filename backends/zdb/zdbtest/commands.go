package zdbtest

import (
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

type command struct {
	name string
	run  func(c *client, args [][]byte) []byte
}

// table is searched in order and a request's command name matches the first
// entry it is a case-insensitive prefix of (0-db compares with strncasecmp
// over the request's length), so order decides what "S" or "N" run.
var table []command

func init() {
	notModelled := func(c *client, args [][]byte) []byte { return errReply("Command not supported") }
	table = []command{
		{"*", func(c *client, args [][]byte) []byte { return errReply("This is not a valid command") }},
		{"WAIT", nil}, // handled in exec: it replies late
		{"PING", cmdPing},
		{"TIME", cmdTime},
		{"AUTH", cmdAuth},
		{"SET", cmdSet},
		{"SETX", cmdSet},
		{"GET", cmdGet},
		{"MGET", cmdMget},
		{"DEL", cmdDel},
		{"EXISTS", cmdExists},
		{"CHECK", cmdCheck},
		{"LENGTH", cmdLength},
		{"KEYTIME", cmdKeytime},
		{"SCAN", cmdScan},
		{"SCANX", cmdScan},
		{"RSCAN", cmdRscan},
		{"KSCAN", func(c *client, args [][]byte) []byte {
			return errReply("Command disabled in release code, not yet available")
		}},
		{"HISTORY", notModelled},
		{"KEYCUR", cmdKeycur},
		{"INFO", cmdInfo},
		{"STOP", func(c *client, args [][]byte) []byte { return errReply("Unauthorized") }},
		{"DBSIZE", cmdDbsize},
		{"NSNEW", cmdNsnew},
		{"NSDEL", cmdNsdel},
		{"NSLIST", cmdNslist},
		{"NSSET", cmdNsset},
		{"NSINFO", cmdNsinfo},
		{"NSJUMP", cmdAdminOK},
		{"SELECT", cmdSelect},
		{"RELOAD", cmdAdminOK},
		{"FLUSH", cmdFlush},
		{"HOOKS", cmdHooks},
		{"INDEX", cmdIndex},
		{"DATA", notModelled},
	}
}

// matches is strncasecmp(req, name, len(req)) == 0: req may be a prefix of
// name; both "end" at a NUL byte.
func matches(req []byte, name string) bool {
	for i := 0; i < len(req); i++ {
		a := lower(req[i])
		var b byte
		if i < len(name) {
			b = lower(name[i])
		}
		if a != b {
			return false
		}
		if a == 0 {
			return true
		}
	}
	return true
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func lookup(name []byte) *command {
	for i := range table {
		if matches(name, table[i].name) {
			return &table[i]
		}
	}
	return nil
}

// argsValidate is 0-db's command_args_validate: exactly n arguments, none
// empty unless allowed.
func argsValidate(args [][]byte, n int, emptyOK bool) []byte {
	if len(args) != n {
		return errReply("Unexpected arguments")
	}
	if !emptyOK {
		for _, a := range args {
			if len(a) == 0 {
				return errReply("Invalid argument")
			}
		}
	}
	return nil
}

func (c *client) adminCheck() []byte {
	if !c.admin {
		return errReply("Permission denied")
	}
	return nil
}

func cmdPing(c *client, args [][]byte) []byte { return status("PONG") }

func cmdTime(c *client, args [][]byte) []byte {
	now := time.Now()
	out := arrayHeader(2)
	out = append(out, bulk([]byte(strconv.FormatInt(now.Unix(), 10)))...)
	return append(out, bulk([]byte(strconv.Itoa(now.Nanosecond()/1000)))...)
}

func sha1Hex(challenge, password string) string {
	sum := sha1.Sum([]byte(challenge + ":" + password))
	return hex.EncodeToString(sum[:])
}

func equal(a []byte, b string) bool { return subtle.ConstantTimeCompare(a, []byte(b)) == 1 }

func cmdAuth(c *client, args [][]byte) []byte {
	admin := c.s.opts.AdminPassword
	switch len(args) {
	case 2:
		if admin == "" {
			return errReply("Authentication disabled")
		}
		if e := argsValidate(args, 2, false); e != nil {
			return e
		}
		if len(args[1]) > 128 {
			return errReply("Password too long")
		}
		if equal(args[1], admin) {
			c.admin = true
			return status("OK")
		}
		return errReply("Access denied")
	case 3:
		if e := argsValidate(args, 3, false); e != nil {
			return e
		}
		if !matches(args[1], "SECURE") {
			return errReply("Only SECURE extra method supported")
		}
		if matches(args[2], "CHALLENGE") {
			c.nonce = newChallenge()
			return status(c.nonce)
		}
		if admin == "" {
			return errReply("Authentication disabled")
		}
		if c.nonce == "" {
			return errReply("No CHALLENGE requested, secure authentication not available")
		}
		if len(args[2]) != 40 {
			return errReply("Invalid hash length")
		}
		ok := equal(args[2], sha1Hex(c.nonce, admin))
		c.nonce = ""
		if ok {
			c.admin = true
			return status("OK")
		}
		return errReply("Access denied")
	}
	return errReply("Unexpected arguments")
}

// readCheck is what GET, EXISTS and SCAN check of the namespace.
func (c *client) readCheck() []byte {
	if c.ns.freeze {
		return errReply("Namespace is temporarily frozen (read-write disabled)")
	}
	return nil
}

// writeCheck is what SET and DEL check of the namespace and session.
func (c *client) writeCheck() []byte {
	if c.ns.freeze {
		return errReply("Namespace is temporarily frozen (read-write disabled)")
	}
	if c.ns.lock {
		return errReply("Namespace is temporarily locked (read-only)")
	}
	if !c.writable {
		return errReply("Namespace is in read-only mode")
	}
	return nil
}

func cmdSet(c *client, args [][]byte) []byte {
	var ts uint32
	if len(args) == 4 {
		if e := c.adminCheck(); e != nil {
			return e
		}
		ts = uint32(atoi(args[3]))
	} else if e := argsValidate(args, 3, true); e != nil {
		return e
	}
	key, value := args[1], args[2]
	if len(key) > MaxKey {
		return errReply("Key too large")
	}
	if e := c.writeCheck(); e != nil {
		return e
	}
	ns := c.ns
	var existing *entry
	if len(key) > 0 {
		existing = ns.live[string(key)]
	}
	if ns.maxsize > 0 {
		var floating int64
		if existing != nil {
			floating = int64(len(existing.value))
		}
		if ns.dataSize+int64(len(value)) > ns.maxsize+floating {
			return errReply("No space left on this namespace")
		}
	}
	if ns.worm && existing != nil {
		return errReply("Namespace is protected by worm mode")
	}
	if ns.seq {
		if len(key) > 0 && (len(key) != 8 || existing == nil) {
			return errReply("Invalid key, only update authorized")
		}
		if existing != nil && existing.crc == crc(value) {
			return nilBulk
		}
		id := string(key)
		if existing == nil {
			id = seqKey(ns.nextSeq)
		}
		// An update uses up the next id too (0-db writes a flagged copy).
		ns.nextSeq++
		ns.set(id, value, ts)
		return bulk([]byte(id))
	}
	if len(key) == 0 {
		return errReply("Invalid argument, key needed")
	}
	// 0-db compares CRCs, not bytes, to call a value unchanged.
	if existing != nil && existing.crc == crc(value) {
		return nilBulk
	}
	ns.set(string(key), value, ts)
	return bulk(key)
}

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// getEntry is the common key check of GET, EXISTS, CHECK, LENGTH, KEYTIME.
func (c *client) getEntry(args [][]byte) (*entry, []byte) {
	if e := argsValidate(args, 2, false); e != nil {
		return nil, e
	}
	if len(args[1]) > MaxKey {
		return nil, errReply("Invalid key")
	}
	if e := c.readCheck(); e != nil {
		return nil, e
	}
	return c.ns.live[string(args[1])], nil
}

func cmdGet(c *client, args [][]byte) []byte {
	e, rep := c.getEntry(args)
	if rep != nil {
		return rep
	}
	if e == nil {
		return nilBulk
	}
	return bulk(e.value)
}

func cmdMget(c *client, args [][]byte) []byte {
	if len(args) < 2 {
		return errReply("Invalid arguments")
	}
	if e := c.readCheck(); e != nil {
		return e
	}
	out := arrayHeader(len(args) - 1)
	for _, k := range args[1:] {
		if e, ok := c.ns.live[string(k)]; ok {
			out = append(out, bulk(e.value)...)
		} else {
			out = append(out, nilBulk...)
		}
	}
	return out
}

func cmdExists(c *client, args [][]byte) []byte {
	e, rep := c.getEntry(args)
	if rep != nil {
		return rep
	}
	if e == nil {
		return integer(0)
	}
	return integer(1)
}

func cmdCheck(c *client, args [][]byte) []byte {
	e, rep := c.getEntry(args)
	if rep != nil {
		return rep
	}
	if e == nil {
		return nilBulk
	}
	return integer(1)
}

func cmdLength(c *client, args [][]byte) []byte {
	e, rep := c.getEntry(args)
	if rep != nil {
		return rep
	}
	if e == nil {
		return nilBulk
	}
	return integer(int64(len(e.value)))
}

func cmdKeytime(c *client, args [][]byte) []byte {
	e, rep := c.getEntry(args)
	if rep != nil {
		return rep
	}
	if e == nil {
		return nilBulk
	}
	return integer(int64(e.ts))
}

func cmdDel(c *client, args [][]byte) []byte {
	if e := argsValidate(args, 2, false); e != nil {
		return e
	}
	if len(args[1]) > MaxKey {
		return errReply("Invalid key")
	}
	if e := c.writeCheck(); e != nil {
		return e
	}
	if _, ok := c.ns.live[string(args[1])]; !ok {
		return errReply("Key not found")
	}
	if c.ns.worm {
		return errReply("Cannot delete a key when namespace is in worm mode")
	}
	c.ns.del(string(args[1]))
	return status("OK")
}

func cmdDbsize(c *client, args [][]byte) []byte { return integer(int64(len(c.ns.live))) }

func cmdKeycur(c *client, args [][]byte) []byte {
	if e := argsValidate(args, 2, false); e != nil {
		return e
	}
	e, ok := c.ns.live[string(args[1])]
	if !ok {
		return errReply("Key not found")
	}
	return bulk(cursor(e))
}

// scan walks the log from start (exclusive of a cursor position) in
// direction dir, collecting up to one batch of live entries.
func (c *client) scan(args [][]byte, dir int) []byte {
	if e := c.readCheck(); e != nil {
		return e
	}
	ns := c.ns
	var pos int
	if len(args) == 1 {
		pos = -1
		if dir < 0 {
			pos = len(ns.log)
		}
	} else {
		e := ns.fromCursor(args[1])
		if e == nil {
			return errReply("Invalid key format")
		}
		pos = int(e.pos)
	}
	var batch []*entry
	for i := pos + dir; i >= 0 && i < len(ns.log) && len(batch) < c.s.opts.ScanBatch; i += dir {
		if !ns.log[i].deleted {
			batch = append(batch, ns.log[i])
		}
	}
	if len(batch) == 0 {
		return errReply("No more data")
	}
	out := arrayHeader(2)
	out = append(out, bulk(cursor(batch[len(batch)-1]))...)
	out = append(out, arrayHeader(len(batch))...)
	for _, e := range batch {
		out = append(out, arrayHeader(3)...)
		out = append(out, bulk([]byte(e.key))...)
		out = append(out, integer(int64(len(e.value)))...)
		out = append(out, integer(int64(e.ts))...)
	}
	return out
}

func cmdScan(c *client, args [][]byte) []byte  { return c.scan(args, +1) }
func cmdRscan(c *client, args [][]byte) []byte { return c.scan(args, -1) }

func cmdInfo(c *client, args [][]byte) []byte {
	s := c.s
	var b strings.Builder
	fmt.Fprintf(&b, "# server\n")
	fmt.Fprintf(&b, "server_name: 0-db (zdb)\n")
	fmt.Fprintf(&b, "server_revision: v2.0.7-zdbtest\n")
	fmt.Fprintf(&b, "engine_revision: v2.0.7-zdbtest\n")
	fmt.Fprintf(&b, "instance_id: %d\n", s.boot.UnixNano()&0xffffffff)
	fmt.Fprintf(&b, "boot_time: %d\n", s.boot.Unix())
	fmt.Fprintf(&b, "uptime: %d\n", int64(time.Since(s.boot).Seconds()))
	fmt.Fprintf(&b, "\n# clients\n")
	fmt.Fprintf(&b, "clients_lifetime: %d\n", s.clients)
	fmt.Fprintf(&b, "\n# internals\n")
	fmt.Fprintf(&b, "namespaces: %d\n", len(s.nss))
	fmt.Fprintf(&b, "sequential_key_size: 8\n")
	fmt.Fprintf(&b, "data_version: 3\n")
	fmt.Fprintf(&b, "index_version: 4\n")
	fmt.Fprintf(&b, "\n# stats\n")
	fmt.Fprintf(&b, "commands_executed: %d\n", s.commands)
	return bulk([]byte(b.String()))
}

// validName is 0-db's namespace_valid_name.
func validName(n string) bool {
	return n != "default" && n != "." && n != ".." && !strings.Contains(n, "/")
}

func cmdNsnew(c *client, args [][]byte) []byte {
	if e := c.adminCheck(); e != nil {
		return e
	}
	if e := argsValidate(args, 2, false); e != nil {
		return e
	}
	if len(args[1]) > 128 {
		return errReply("Namespace too long")
	}
	name := string(args[1])
	if !validName(name) {
		return errReply("This name is not allowed")
	}
	s := c.s
	if _, ok := s.nss[name]; ok {
		return errReply("This namespace is not available")
	}
	s.nss[name] = newNamespace(name)
	s.order = append(s.order, name)
	return status("OK")
}

func cmdNsdel(c *client, args [][]byte) []byte {
	if e := c.adminCheck(); e != nil {
		return e
	}
	if e := argsValidate(args, 2, false); e != nil {
		return e
	}
	if len(args[1]) > 128 {
		return errReply("Namespace too long")
	}
	name := string(args[1])
	s := c.s
	if name == "default" {
		return errReply("Cannot remove default namespace")
	}
	ns, ok := s.nss[name]
	if !ok {
		return errReply("This namespace doesn't exists")
	}
	if c.ns == ns {
		return errReply("Cannot remove namespace you're currently using.")
	}
	ns.removed = true
	delete(s.nss, name)
	for i, n := range s.order {
		if n == name {
			s.order = append(s.order[:i:i], s.order[i+1:]...)
			break
		}
	}
	return status("OK")
}

func cmdNslist(c *client, args [][]byte) []byte {
	out := arrayHeader(len(c.s.order))
	for _, n := range c.s.order {
		out = append(out, bulk([]byte(n))...)
	}
	return out
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func cmdNsinfo(c *client, args [][]byte) []byte {
	if e := argsValidate(args, 2, false); e != nil {
		return e
	}
	if len(args[1]) > 128 {
		return errReply("Namespace too long")
	}
	ns, ok := c.s.nss[string(args[1])]
	if !ok {
		return errReply("Namespace not found")
	}
	mb := func(n int64) float64 { return float64(n) / (1024 * 1024) }
	var b strings.Builder
	idx := ns.indexSize()
	fmt.Fprintf(&b, "# namespace\n")
	fmt.Fprintf(&b, "name: %s\n", ns.name)
	fmt.Fprintf(&b, "entries: %d\n", len(ns.live))
	fmt.Fprintf(&b, "public: %s\n", yesNo(ns.public))
	fmt.Fprintf(&b, "worm: %s\n", yesNo(ns.worm))
	fmt.Fprintf(&b, "locked: %s\n", yesNo(ns.lock))
	fmt.Fprintf(&b, "password: %s\n", yesNo(ns.password != ""))
	fmt.Fprintf(&b, "data_size_bytes: %d\n", ns.dataSize)
	fmt.Fprintf(&b, "data_size_mb: %.2f\n", mb(ns.dataSize))
	fmt.Fprintf(&b, "data_limits_bytes: %d\n", ns.maxsize)
	fmt.Fprintf(&b, "index_size_bytes: %d\n", idx)
	fmt.Fprintf(&b, "index_size_kb: %.2f\n", float64(idx)/1024)
	fmt.Fprintf(&b, "next_internal_id: 0x%x\n", bits.ReverseBytes64(ns.nextEntry))
	mode := "userkey"
	if ns.seq {
		mode = "sequential"
	}
	fmt.Fprintf(&b, "mode: %s\n", mode)
	for _, k := range []string{"stats_index_io_errors", "stats_index_io_error_last", "stats_index_faults",
		"stats_data_io_errors", "stats_data_io_error_last", "stats_data_faults"} {
		fmt.Fprintf(&b, "%s: 0\n", k)
	}
	if ns.maxsize > 0 {
		avail := ns.maxsize - ns.dataSize
		if avail < 0 {
			avail = 0
		}
		fmt.Fprintf(&b, "space_available: %d\n", avail)
	}
	free := c.s.opts.DiskFree
	fmt.Fprintf(&b, "index_disk_freespace_bytes: %d\n", free)
	fmt.Fprintf(&b, "index_disk_freespace_mb: %.2f\n", mb(free))
	fmt.Fprintf(&b, "data_disk_freespace_bytes: %d\n", free)
	fmt.Fprintf(&b, "data_disk_freespace_mb: %.2f\n", mb(free))
	if c.admin {
		fmt.Fprintf(&b, "data_path: /zdbtest/data/%s\n", ns.name)
		fmt.Fprintf(&b, "data_active: /zdbtest/data/%s/d0\n", ns.name)
		fmt.Fprintf(&b, "index_path: /zdbtest/index/%s\n", ns.name)
		fmt.Fprintf(&b, "index_active: /zdbtest/index/%s/i0\n", ns.name)
		fmt.Fprintf(&b, "data_current_id: 0\n")
		fmt.Fprintf(&b, "data_current_offset: %d\n", 28+ns.dataSize)
	}
	b.WriteString("\n")
	return bulk([]byte(b.String()))
}

func cmdNsset(c *client, args [][]byte) []byte {
	if e := c.adminCheck(); e != nil {
		return e
	}
	if e := argsValidate(args, 4, false); e != nil {
		return e
	}
	if len(args[1]) > 128 {
		return errReply("Namespace too long")
	}
	if len(args[3]) > 63 {
		return errReply("Argument too long")
	}
	name, prop, value := string(args[1]), string(args[2]), string(args[3])
	if name == "default" && prop != "mode" && prop != "lock" && prop != "freeze" {
		return errReply("Cannot update default namespace")
	}
	ns, ok := c.s.nss[name]
	if !ok {
		return errReply("Namespace not found")
	}
	flag := value[0] == '1'
	switch prop {
	case "maxsize":
		ns.maxsize = atoi(args[3]) // "abc" becomes 0 without an error, as in 0-db
	case "password":
		if value == "*" {
			ns.password = ""
		} else {
			ns.password = value
		}
	case "public":
		ns.public = flag
	case "worm":
		ns.worm = flag
	case "lock":
		ns.lock = flag
	case "freeze":
		ns.freeze = flag
	case "mode":
		if value != "user" && value != "seq" {
			return errReply("Invalid property value (expected: user, seq)")
		}
		if len(ns.log) > 0 {
			return errReply("Cannot change mode of used namespace")
		}
		ns.seq = value == "seq"
	default:
		return errReply("Invalid property")
	}
	return status("OK")
}

func cmdAdminOK(c *client, args [][]byte) []byte {
	if e := c.adminCheck(); e != nil {
		return e
	}
	return status("OK")
}

func cmdSelect(c *client, args [][]byte) []byte {
	if len(args) < 2 {
		return errReply("Invalid argument")
	}
	if len(args) > 4 {
		return errReply("Too many arguments")
	}
	if len(args[1]) > 128 {
		return errReply("Namespace too long")
	}
	name := string(args[1])
	ns, ok := c.s.nss[name]
	if !ok {
		return errReply("Namespace not found")
	}
	if len(args) == 4 && !matches(args[2], "SECURE") {
		return errReply("Only SECURE extra method supported")
	}
	password := ns.password
	if name == "default" && c.s.opts.Protect {
		password = c.s.opts.AdminPassword
	}
	writable := true
	if password != "" {
		switch len(args) {
		case 2:
			if !ns.public {
				return errReply("Namespace protected and private")
			}
			writable = false
		case 3:
			if len(args[2]) > 255 {
				return errReply("Password too long")
			}
			if !equal(args[2], password) {
				return errReply("Access denied")
			}
		case 4:
			if c.nonce == "" {
				return errReply("No CHALLENGE requested, secure authentication not available")
			}
			ok := equal(args[3], sha1Hex(c.nonce, password))
			c.nonce = ""
			if !ok {
				return errReply("Access denied")
			}
		}
	}
	c.ns = ns
	c.writable = writable
	return status("OK")
}

func cmdFlush(c *client, args [][]byte) []byte {
	if c.ns.public || c.ns.password == "" {
		return errReply("Flushing public namespace denied")
	}
	// v2.0.7 answers +OK and removes nothing (its file filter misses the
	// v2 file names); the double does the same.
	return status("OK")
}

func cmdHooks(c *client, args [][]byte) []byte {
	if e := c.adminCheck(); e != nil {
		return e
	}
	return arrayHeader(0)
}

func cmdIndex(c *client, args [][]byte) []byte {
	if len(args) >= 2 && matches(args[1], "DIRTY") {
		if len(args) >= 3 && matches(args[2], "RESET") {
			return status("OK")
		}
		return arrayHeader(0)
	}
	return errReply("Unknown index command")
}

// wait implements WAIT: it validates like 0-db and then times out, since the
// double does not deliver notifications.
func (c *client) wait(args [][]byte) ([]byte, bool, time.Duration) {
	if len(args) != 2 && len(args) != 3 {
		return errReply("Invalid arguments"), false, 0
	}
	if lookup(args[1]) == nil {
		return errReply("Unknown command to watch"), false, 0
	}
	timeout := int64(5000)
	if len(args) == 3 {
		if len(args[2]) > 16 {
			return errReply("Invalid timeout"), false, 0
		}
		timeout = atoi(args[2])
		if timeout < 100 || timeout > 30*60*1000 {
			return errReply("Invalid timeout"), false, 0
		}
	}
	return errReply("Timeout"), false, time.Duration(timeout) * time.Millisecond
}
