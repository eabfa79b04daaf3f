package healer

import (
	"fmt"
	"sync"

	"github.com/healstore/healstore/encoder"
	"github.com/healstore/healstore/metastore"
)

// StripeCodecs returns a Codec source that needs no policy and no key:
// rebuilding and verifying work on sealed payloads, so all a codec must
// match is the stripe's k, m and checksum algorithm (told by the length of
// the recorded sums). The block size is the largest allowed, so stripes of
// any object's policy pass the length checks. Codecs are cached.
func StripeCodecs() func(st *metastore.Stripe) (Codec, error) {
	var mu sync.Mutex
	cache := map[[3]int]*encoder.Codec{}
	return func(st *metastore.Stripe) (Codec, error) {
		sumLen := 0
		for _, l := range st.Shards {
			if len(l.Sum) > 0 {
				sumLen = len(l.Sum)
				break
			}
		}
		alg := encoder.ChecksumXXH3
		if sumLen == len(encoder.Sum(encoder.ChecksumSHA256, nil)) {
			alg = encoder.ChecksumSHA256
		}
		key := [3]int{st.K, st.M, sumLen}
		mu.Lock()
		defer mu.Unlock()
		if c, ok := cache[key]; ok {
			return c, nil
		}
		c, err := encoder.NewCodec(encoder.Policy{
			K: st.K, M: st.M, BlockSize: encoder.MaxBlockSize,
			Compression: encoder.CompressionNone, Encryption: encoder.EncryptionNone, Checksum: alg,
		}, nil)
		if err != nil {
			return nil, fmt.Errorf("codec for %d+%d %s: %w", st.K, st.M, alg, err)
		}
		cache[key] = c
		return c, nil
	}
}
