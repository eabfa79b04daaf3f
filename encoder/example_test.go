package encoder_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/healstore/healstore/encoder"
)

func Example() {
	p := encoder.DefaultPolicy() // 4+2, 4 MiB blocks, AES-256-GCM, xxh3-128
	key := bytes.Repeat([]byte{1}, 32)
	c, err := encoder.NewCodec(p, key)
	if err != nil {
		panic(err)
	}
	obj, id := encoder.NewObjectID(), encoder.NewStripeID()
	st, err := c.EncodeBlock(obj, 0, id, []byte("hello, healstore"))
	if err != nil {
		panic(err)
	}
	// Lose two shards (any two): the block still decodes.
	shards := append([][]byte(nil), st.Shards...)
	shards[0], shards[5] = nil, nil
	data, err := c.DecodeBlock(obj, 0, id, shards, st.Sums)
	fmt.Printf("%s %v\n", data, err)

	// Rebuild the lost shards, byte for byte, without the key.
	rebuilt, _, err := c.Reconstruct(id, shards, st.Sums, []int{0, 5})
	fmt.Println(bytes.Equal(rebuilt[0], st.Shards[0]), bytes.Equal(rebuilt[1], st.Shards[5]), err)

	// A third loss is one too many.
	shards[1] = nil
	_, err = c.DecodeBlock(obj, 0, id, shards, st.Sums)
	var tf *encoder.TooFewShardsError
	fmt.Println(errors.As(err, &tf), tf.Missing)
	// Output:
	// hello, healstore <nil>
	// true true <nil>
	// true [0 1 5]
}

func ExampleCodec_NewStreamEncoder() {
	p := encoder.Policy{K: 2, M: 1, BlockSize: 4, Compression: "none", Encryption: "none", Checksum: "xxh3-128"}
	c, err := encoder.NewCodec(p, nil)
	if err != nil {
		panic(err)
	}
	obj := encoder.NewObjectID()
	s := c.NewStreamEncoder(context.Background(), obj, strings.NewReader("0123456789"), 2)
	defer s.Close()
	for {
		block, st, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		data, _ := c.DecodeBlock(obj, block, st.ID, st.Shards, st.Sums)
		fmt.Printf("block %d: %q in %d shards of %d bytes\n", block, data, len(st.Shards), len(st.Shards[0]))
		st.Release() // once the shards are stored
	}
	// Output:
	// block 0: "0123" in 3 shards of 192 bytes
	// block 1: "4567" in 3 shards of 192 bytes
	// block 2: "89" in 3 shards of 192 bytes
}
