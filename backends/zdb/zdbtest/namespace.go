package zdbtest

import (
	"encoding/binary"
	"hash/crc32"
	"time"
)

// entry is one record of a namespace's index log. 0-db appends an entry for
// every write and flags the entry it replaces (or deletes) as deleted; SCAN
// walks the log in order and skips flagged entries, and a cursor is a
// position in the log. The double keeps the same shape so that SCAN behaves
// the same under concurrent writes (an overwritten key can come round again).
type entry struct {
	key     string
	value   []byte
	crc     uint32
	ts      uint32
	pos     uint32 // index in the log
	deleted bool
}

type namespace struct {
	name     string
	password string // "" = none
	public   bool
	worm     bool
	lock     bool
	freeze   bool
	seq      bool
	maxsize  int64
	removed  bool

	log       []*entry
	live      map[string]*entry
	dataSize  int64
	nextEntry uint64 // inserts so far (NSINFO next_internal_id)
	nextSeq   uint64 // next sequential id
}

func newNamespace(name string) *namespace {
	return &namespace{name: name, public: true, live: map[string]*entry{}}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// indexEntrySize is what one live key costs in NSINFO's index_size_bytes:
// a fixed header plus the key (NSINFO of three 2-byte keys showed 195).
func indexEntrySize(key string) int64 { return 63 + int64(len(key)) }

func (ns *namespace) indexSize() int64 {
	var n int64
	for k := range ns.live {
		n += indexEntrySize(k)
	}
	return n
}

// set stores value under key, flagging the entry it replaces.
func (ns *namespace) set(key string, value []byte, ts uint32) *entry {
	if ts == 0 {
		ts = uint32(time.Now().Unix())
	}
	e := &entry{key: key, value: append([]byte(nil), value...), crc: crc(value), ts: ts, pos: uint32(len(ns.log))}
	if old, ok := ns.live[key]; ok {
		old.deleted = true
		ns.dataSize -= int64(len(old.value))
	} else {
		ns.nextEntry++
	}
	ns.log = append(ns.log, e)
	ns.live[key] = e
	ns.dataSize += int64(len(value))
	return e
}

func (ns *namespace) del(key string) bool {
	e, ok := ns.live[key]
	if !ok {
		return false
	}
	e.deleted = true
	delete(ns.live, key)
	ns.dataSize -= int64(len(e.value))
	return true
}

func seqKey(id uint64) string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], id)
	return string(b[:])
}

// cursorLen is the size of 0-db's binary scan cursor (KEYCUR, SCAN).
const cursorLen = 17

// cursor serialises a log position the way 0-db's cursor carries one: key
// length, file id, value length, index offset and CRC, which SCAN checks
// against the log before trusting it.
func cursor(e *entry) []byte {
	b := make([]byte, cursorLen)
	b[0] = byte(len(e.key))
	binary.LittleEndian.PutUint32(b[1:5], 0)
	binary.LittleEndian.PutUint32(b[5:9], uint32(len(e.value)))
	binary.LittleEndian.PutUint32(b[9:13], e.pos)
	binary.LittleEndian.PutUint32(b[13:17], e.crc)
	return b
}

// fromCursor finds the log entry a cursor points at, or nil when the cursor
// does not match the log ("Invalid key format").
func (ns *namespace) fromCursor(b []byte) *entry {
	if len(b) != cursorLen {
		return nil
	}
	pos := binary.LittleEndian.Uint32(b[9:13])
	if int(pos) >= len(ns.log) {
		return nil
	}
	e := ns.log[pos]
	if int(b[0]) != len(e.key) || binary.LittleEndian.Uint32(b[5:9]) != uint32(len(e.value)) ||
		binary.LittleEndian.Uint32(b[13:17]) != e.crc {
		return nil
	}
	return e
}
