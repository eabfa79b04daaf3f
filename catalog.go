package healstore

import "context"

// Catalog is a store opened for its names alone. Listing, renaming and
// deleting objects read and change only the metadata, so OpenCatalog opens
// no backend: where Open probes every backend first, and waits up to 10 s
// for one that accepts connections and never answers (a hung node), a
// Catalog is ready as soon as the metastore is. A deleted object's shards
// are removed by garbage collection, as after Store.Delete.
//
// Like a Store, a Catalog on the embedded metastore holds it for its
// process until Close.
type Catalog struct{ s *Store }

// OpenCatalog opens the metadata of the store cfg describes, and no
// backend. It fails as Open does on a bad config (a policy the backends
// cannot place included), a master key that does not match the store, or a
// metastore that cannot be opened (another process holding the embedded
// one: metastore.ErrLocked). Unlike Open it makes no store: metadata that
// holds none (dir or metadata_dir pointing elsewhere) is an ErrBadConfig
// naming where it looked, not an empty listing, and nothing is created
// there.
func OpenCatalog(ctx context.Context, cfg *Config) (*Catalog, error) {
	s, err := open(ctx, cfg, false)
	if err != nil {
		return nil, err
	}
	return &Catalog{s}, nil
}

// List is Store.List.
func (c *Catalog) List(ctx context.Context, prefix, after string, limit int) ([]ObjectInfo, string, error) {
	return c.s.List(ctx, prefix, after, limit)
}

// Delete is Store.Delete.
func (c *Catalog) Delete(ctx context.Context, name string) error { return c.s.Delete(ctx, name) }

// Rename is Store.Rename.
func (c *Catalog) Rename(ctx context.Context, from, to string) error {
	return c.s.Rename(ctx, from, to)
}

// Close closes the metastore.
func (c *Catalog) Close() error { return c.s.Close() }
