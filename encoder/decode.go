package encoder

import (
	"bytes"
	"fmt"
	"slices"
)

// Shard states while a stripe is checked.
const (
	stMissing   = iota // nil in the input
	stCandidate        // header checks out; payload not hashed yet
	stGood             // payload and sums verified
	stBad              // failed a check; counts as missing
)

// stripeCheck tracks what is known about each shard of one stripe.
type stripeCheck struct {
	c      *Codec
	id     StripeID
	shards [][]byte
	sums   [][]byte
	hdr    []Header
	state  []uint8
	cause  []error
	geo    Header // lengths the good shards agree on
}

func (c *Codec) newStripeCheck(id StripeID, shards, sums [][]byte) (*stripeCheck, error) {
	n := c.p.K + c.p.M
	if len(shards) != n {
		return nil, fmt.Errorf("encoder: stripe %s: got %d shards, policy has k+m=%d", id, len(shards), n)
	}
	if sums != nil && len(sums) != n {
		return nil, fmt.Errorf("encoder: stripe %s: got %d sums, policy has k+m=%d", id, len(sums), n)
	}
	s := &stripeCheck{c: c, id: id, shards: shards, sums: sums,
		hdr: make([]Header, n), state: make([]uint8, n), cause: make([]error, n)}
	for i, b := range shards {
		if b == nil {
			continue
		}
		h, err := c.checkHeader(id, i, b)
		if err != nil {
			s.state[i], s.cause[i] = stBad, err
			continue
		}
		s.hdr[i], s.state[i] = h, stCandidate
	}
	return s, nil
}

func (s *stripeCheck) sum(i int) []byte {
	if s.sums == nil {
		return nil
	}
	return s.sums[i]
}

// checkHeader checks everything about a shard but its payload checksum.
func (c *Codec) checkHeader(id StripeID, index int, shard []byte) (Header, error) {
	bad := func(format string, args ...any) (Header, error) {
		return Header{}, &ShardError{Index: index, Reason: fmt.Sprintf(format, args...)}
	}
	if len(shard) < HeaderSize {
		return bad("truncated to %d bytes, shorter than the %d-byte header", len(shard), HeaderSize)
	}
	h, err := ParseHeader(shard)
	if err != nil {
		if se, ok := err.(*ShardError); ok {
			return bad("%s", se.Reason)
		}
		return bad("%v", err)
	}
	switch {
	case h.Stripe != id:
		return bad("belongs to stripe %s, not %s", h.Stripe, id)
	case h.Index != index:
		return bad("header says shard index %d", h.Index)
	case h.K != c.p.K || h.M != c.p.M:
		return bad("header says k=%d m=%d, policy has k=%d m=%d", h.K, h.M, c.p.K, c.p.M)
	case h.Checksum != c.p.Checksum:
		return bad("header checksum algorithm %s, policy has %s", h.Checksum, c.p.Checksum)
	case h.SealedLen > maxSealedAny(c.p.BlockSize) || h.DataLen > c.p.BlockSize:
		return bad("lengths (sealed %d, data %d) exceed the policy's block_size %d", h.SealedLen, h.DataLen, c.p.BlockSize)
	case h.PayloadLen != len(shard)-HeaderSize:
		return bad("payload is %d bytes, header says %d (truncated or extended)", len(shard)-HeaderSize, h.PayloadLen)
	}
	return h, nil
}

// agree settles the lengths the stripe's shards share: those of the most
// shards (ties go to the lowest index). A shard that disagrees is bad; a
// lone shard with a valid CRC but wrong lengths must not decide the block.
func (s *stripeCheck) agree() {
	type geo struct{ p, s, d int }
	count := map[geo]int{}
	var best geo
	bestN := 0
	for i, st := range s.state {
		if st != stCandidate && st != stGood {
			continue
		}
		g := geo{s.hdr[i].PayloadLen, s.hdr[i].SealedLen, s.hdr[i].DataLen}
		count[g]++
		if count[g] > bestN {
			best, bestN = g, count[g]
		}
	}
	for i, st := range s.state {
		if st != stCandidate && st != stGood {
			continue
		}
		h := s.hdr[i]
		if (geo{h.PayloadLen, h.SealedLen, h.DataLen}) != best {
			s.state[i] = stBad
			s.cause[i] = &ShardError{Index: i, Reason: fmt.Sprintf("lengths (payload %d, sealed %d, data %d) disagree with the other shards (payload %d, sealed %d, data %d)",
				h.PayloadLen, h.SealedLen, h.DataLen, best.p, best.s, best.d)}
			continue
		}
		s.geo = h
	}
}

// selectK picks k shards to decode from, lowest indices first (data shards
// need no decoding). When fewer than k remain it verifies the rest, so the
// error it returns reports every supplied shard accurately.
func (s *stripeCheck) selectK() ([]int, error) {
	s.agree()
	k := s.c.p.K
	var sel []int
	for i, st := range s.state {
		if (st == stCandidate || st == stGood) && len(sel) < k {
			sel = append(sel, i)
		}
	}
	if len(sel) == k {
		return sel, nil
	}
	if len(sel) > 0 {
		s.pass(sel, nil, false)
	}
	return nil, s.tooFew()
}

func (s *stripeCheck) tooFew() error {
	e := &TooFewShardsError{Need: s.c.p.K}
	for i, st := range s.state {
		switch st {
		case stMissing:
			e.Missing = append(e.Missing, i)
		case stBad:
			e.Corrupt = append(e.Corrupt, i)
			e.Causes = append(e.Causes, s.cause[i])
		default:
			e.Present = append(e.Present, i)
		}
	}
	return e
}

// pass reads the selected shards column by column: it hashes their
// payloads, fills dst[i] for every non-nil dst entry (copying selected
// shards, rebuilding the others from the selection) and, with hashDst,
// hashes what it wrote to dst. Each column stays in cache from read to
// hash. It then checks the selected shards' checksums, marks each good or
// bad, and reports whether all were good; dst is only valid if so.
func (s *stripeCheck) pass(sel []int, dst [][]byte, hashDst bool) (ok bool, dstSums [][]byte) {
	c, n := s.c, len(s.state)
	per := s.hdr[sel[0]].PayloadLen
	alg := c.alg
	selected := make([]bool, n)
	leaves := make([][]byte, n)
	for _, i := range sel {
		selected[i] = true
		leaves[i] = alg.leafBuf(per)
	}
	dstLeaves := make([][]byte, len(dst))
	rebuild := false
	for i, d := range dst {
		if d == nil {
			continue
		}
		if hashDst {
			dstLeaves[i] = alg.leafBuf(per)
		}
		if !selected[i] {
			rebuild = true
		}
	}
	payload := func(i int) []byte { return s.shards[i][HeaderSize:] }
	c.parallel(numLeaves(per), func(from, to int) {
		col := make([][]byte, n)
		required := make([]bool, n)
		for t := from; t < to; t++ {
			a := t * leafSize
			b := min(a+leafSize, per)
			// Rebuild and copy before hashing: they read the column from
			// memory and leave it in cache for the faster hashing (see
			// encodeJob.columns).
			if rebuild {
				for i := range col {
					col[i], required[i] = nil, false
					switch {
					case selected[i]:
						col[i] = payload(i)[a:b]
					case dst[i] != nil:
						col[i] = dst[i][a:a:b] // empty with room: rebuilt in place
						required[i] = true
					}
				}
				// Cannot fail: k equal-length shards are present.
				if err := c.rs.ReconstructSome(col, required); err != nil {
					panic("encoder: reed-solomon reconstruct: " + err.Error())
				}
			}
			for i, d := range dst {
				if d != nil && selected[i] {
					copy(d[a:b], payload(i)[a:b])
				}
			}
			for _, i := range sel {
				alg.hashLeaf(leaves[i], payload(i), t)
			}
			if hashDst {
				for i, d := range dst {
					if d != nil {
						alg.hashLeaf(dstLeaves[i], d, t)
					}
				}
			}
		}
	})
	ok = true
	for _, i := range sel {
		if err := s.c.checkPayload(i, s.shards[i], s.hdr[i], alg.root(leaves[i]), s.sum(i)); err != nil {
			s.state[i], s.cause[i] = stBad, err
			ok = false
			continue
		}
		s.state[i] = stGood
	}
	if ok && hashDst {
		dstSums = make([][]byte, len(dst))
		for i := range dst {
			if dstLeaves[i] != nil {
				dstSums[i] = alg.root(dstLeaves[i])
			}
		}
	}
	return ok, dstSums
}

// checkPayload compares a shard's computed payload checksum with its header
// and, when given, the full-shard checksum recorded in the metastore.
func (c *Codec) checkPayload(index int, shard []byte, h Header, payloadSum, sum []byte) error {
	if !bytes.Equal(payloadSum, h.PayloadSum) {
		return &ShardError{Index: index, Reason: "payload checksum mismatch"}
	}
	if sum != nil && !bytes.Equal(c.alg.shardSum(len(shard), shard[:HeaderSize], payloadSum), sum) {
		return &ShardError{Index: index, Reason: "shard differs from the checksum recorded for it"}
	}
	return nil
}

// DecodeBlock returns the plaintext of block number block of object obj,
// coded as stripe id. shards[i] == nil means shard i is missing; sums, when
// not nil, holds the recorded Sum of each shard (a nil entry skips that
// check). Every shard it uses is verified (header and its CRC, stripe id,
// index, k, m, lengths, payload checksum, recorded sum); a bad shard counts
// as missing. All data shards present and good means no decoding at all;
// otherwise the missing data shards are rebuilt from any k good shards.
// Shards beyond the k it needs are not read.
//
// Errors: *TooFewShardsError (errors.Is ErrTooFewShards) when fewer than k
// good shards remain; ErrAuth when the seal does not open (wrong key, moved
// block); ErrCorrupt for a block whose shards verify but whose content is
// inconsistent. The caller's shards are not modified.
func (c *Codec) DecodeBlock(obj ObjectID, block uint64, id StripeID, shards [][]byte, sums [][]byte) ([]byte, error) {
	c.active.Add(1)
	defer c.active.Add(-1)
	s, err := c.newStripeCheck(id, shards, sums)
	if err != nil {
		return nil, err
	}
	for {
		sel, err := s.selectK()
		if err != nil {
			return nil, err
		}
		// Gather (and rebuild) into the block's own memory while hashing,
		// then open in place: the result shares it. Lengths were checked
		// against the policy, so this allocation is bounded by the
		// policy's block size whatever the headers claim.
		sealedBuf := MakeLarge(c.p.K * s.geo.PayloadLen)
		if ok := s.gather(sel, sealedBuf); ok {
			return c.open(obj, block, id, sealedBuf[:s.geo.SealedLen], s.geo.DataLen)
		}
	}
}

// DecodeBlockTo is DecodeBlock writing the plaintext into dst instead of
// new memory; it returns the block's length. dst must have room for the
// whole block (ErrCorrupt when the shards say it is longer); only the
// first n bytes are the block, and on an error dst's content is undefined.
// Verification, errors and the caller's shards are as with DecodeBlock.
//
// It is the cheaper way to read whole blocks: the payloads are gathered
// into pooled memory column by column while they are hashed (each column
// still in cache for the hash), and the seal is opened from there straight
// into dst, so every byte is copied once before decryption and not again.
func (c *Codec) DecodeBlockTo(dst []byte, obj ObjectID, block uint64, id StripeID, shards [][]byte, sums [][]byte) (int, error) {
	c.active.Add(1)
	defer c.active.Add(-1)
	s, err := c.newStripeCheck(id, shards, sums)
	if err != nil {
		return 0, err
	}
	k := c.p.K
	var scratch *[]byte
	defer func() {
		if scratch != nil {
			c.scratch.Put(scratch)
		}
	}()
	for {
		sel, err := s.selectK()
		if err != nil {
			return 0, err
		}
		if s.geo.DataLen > len(dst) {
			return 0, fmt.Errorf("%w: block %d of object %s: the shards say %d bytes, the destination holds %d",
				ErrCorrupt, block, obj, s.geo.DataLen, len(dst))
		}
		need := k * s.geo.PayloadLen
		if scratch == nil {
			scratch = c.getScratch()
		}
		if cap(*scratch) < need {
			// Cannot happen for shards the policy allows (k*per is at most
			// the sealed block plus k-1 bytes of padding); stay correct.
			*scratch = make([]byte, need)
		}
		buf := (*scratch)[:need]
		if ok := s.gather(sel, buf); ok {
			return c.openTo(dst, obj, block, id, buf[:s.geo.SealedLen], s.geo.DataLen)
		}
	}
}

// gather verifies the selected shards and lays the sealed block's k data
// payloads into buf (k*PayloadLen bytes): copied from the shards present,
// rebuilt for the data shards not selected. It reports whether every
// selected shard verified; buf is only valid if so.
func (s *stripeCheck) gather(sel []int, buf []byte) bool {
	k, per := s.c.p.K, s.geo.PayloadLen
	dst := make([][]byte, k+s.c.p.M)
	for i := range k {
		dst[i] = buf[i*per : (i+1)*per]
	}
	ok, _ := s.pass(sel, dst, false)
	return ok
}

// Reconstruct rebuilds the full shards (header and payload) at the indices
// in want from any k verified shards, without the key (it works on sealed
// payloads). It returns them in the order of want, with their Sums. A
// rebuilt shard is byte for byte the shard EncodeBlock made. Verification
// and errors are those of DecodeBlock.
//
// Reconstruct, VerifyShard and BadShards use only K, M, Checksum and
// BlockSize (as an upper bound) of the codec's policy, so one key-less codec
// with BlockSize MaxBlockSize serves every stripe of a given k, m and
// checksum, whatever its compression and encryption.
func (c *Codec) Reconstruct(id StripeID, shards [][]byte, sums [][]byte, want []int) (rebuilt [][]byte, newSums [][]byte, err error) {
	n := c.p.K + c.p.M
	seen := make([]bool, n)
	for _, w := range want {
		if w < 0 || w >= n || seen[w] {
			return nil, nil, fmt.Errorf("encoder: stripe %s: want %v: indices must be distinct and in [0,%d)", id, want, n)
		}
		seen[w] = true
	}
	c.active.Add(1)
	defer c.active.Add(-1)
	s, err := c.newStripeCheck(id, shards, sums)
	if err != nil {
		return nil, nil, err
	}
	for {
		sel, err := s.selectK()
		if err != nil {
			return nil, nil, err
		}
		per := s.geo.PayloadLen
		dst := make([][]byte, n)
		full := make([][]byte, n)
		for _, w := range want {
			full[w] = make([]byte, HeaderSize+per)
			dst[w] = full[w][HeaderSize:]
		}
		ok, payloadSums := s.pass(sel, dst, true)
		if !ok {
			continue
		}
		h := s.geo
		for _, w := range want {
			h.Index, h.PayloadSum = w, payloadSums[w]
			h.put(full[w], c.alg)
			rebuilt = append(rebuilt, full[w])
			newSums = append(newSums, c.alg.shardSum(len(full[w]), full[w][:HeaderSize], h.PayloadSum))
		}
		return rebuilt, newSums, nil
	}
}

// VerifyShard checks one shard of stripe id as DecodeBlock would: header
// and CRC, stripe id, index, k, m, checksum algorithm, lengths against the
// policy, payload checksum and, when sum is not nil, the recorded Sum. It
// returns nil or a *ShardError (errors.Is ErrCorrupt).
func (c *Codec) VerifyShard(id StripeID, index int, shard []byte, sum []byte) error {
	if shard == nil {
		return &ShardError{Index: index, Reason: "missing"}
	}
	h, err := c.checkHeader(id, index, shard)
	if err != nil {
		return err
	}
	c.active.Add(1)
	defer c.active.Add(-1)
	p := shard[HeaderSize:]
	leaves := c.alg.leafBuf(len(p))
	c.parallel(numLeaves(len(p)), func(from, to int) {
		for t := from; t < to; t++ {
			c.alg.hashLeaf(leaves, p, t)
		}
	})
	return c.checkPayload(index, shard, h, c.alg.root(leaves), sum)
}

// BadShards verifies every present shard of a stripe as DecodeBlock does,
// including that their lengths agree, and returns the indices found corrupt
// in ascending order (nil when all present shards are good).
func (c *Codec) BadShards(id StripeID, shards [][]byte, sums [][]byte) ([]int, error) {
	c.active.Add(1)
	defer c.active.Add(-1)
	s, err := c.newStripeCheck(id, shards, sums)
	if err != nil {
		return nil, err
	}
	s.agree()
	var cand []int
	for i, st := range s.state {
		if st == stCandidate {
			cand = append(cand, i)
		}
	}
	if len(cand) > 0 {
		s.pass(cand, nil, false)
	}
	var bad []int
	for i, st := range s.state {
		if st == stBad {
			bad = append(bad, i)
		}
	}
	return slices.Clip(bad), nil
}
