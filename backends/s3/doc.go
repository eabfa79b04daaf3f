// Package s3 is the backend for a bucket (and key prefix) on an S3 server:
// AWS, MinIO, versitygw or any other that speaks the protocol. It uses
// github.com/minio/minio-go/v7.
//
// Object names are <prefix>/<key>, with one escape so that servers that map
// keys to file paths (versitygw's posix back end, MinIO's) never see a path
// segment that is ".", ".." or empty: such a segment is written as "%2E",
// "%2E%2E" or "%". Keys never contain '%', so the mapping reverses exactly.
// The Backend contract (no key is both a value and a prefix of another key
// followed by '/') keeps objects from also being "directories".
//
// Listings must come in strictly ascending byte order, as ListObjectsV2
// promises: a key not greater than the one before fails the walk
// (ErrCorruptReply), so a server repeating a continuation token ends a
// List or a usage count after one repeated page instead of looping. A
// listing must also make progress: a continuation token answered with
// itself, or more than three truncated pages in a row without a key, fails
// the walk the same way (a real server sends an empty truncated page only
// now and then).
//
// Values are sent in one PUT (no multipart), which S3 makes atomic. Ranged
// reads use HTTP ranges. Probe is a bucket HEAD; a missing bucket is
// created, by Open and by Probe, so a wiped bucket comes back empty and the
// store's identity marker tells the healer what happened.
//
// Capacity is unknown unless Spec.Quota is set. Then the quota is enforced
// here (a Put that would pass it fails with ErrFull) against the sum of the
// sizes under the prefix, counted once by listing and kept up to date by
// this backend's own writes, and counted again every RecountInterval to
// catch other writers.
package s3
