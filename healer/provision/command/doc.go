// Package command provisions backends by running a program the user
// configures: the program gets the request as JSON on stdin, creates
// whatever storage it likes (a 0-db namespace on the grid through tfcmd, a
// bucket on an S3 service, a directory on a spare disk) and prints one
// backend spec as JSON on stdout. healstore then treats that backend like
// any other.
//
// This keeps the provisioning policy (which provider, which account, what
// it may cost) in a script the operator owns and can test by hand, instead
// of in healstore's configuration language.
//
// # Protocol
//
// The program is started with the configured arguments plus one more, the
// action: "provision" or "release". The same action is in the environment
// variable HEALSTORE_ACTION and in the request.
//
// On "provision" stdin carries
//
//	{"action":"provision",
//	 "constraints":{"avoid_domains":["node:11","node:12"],"level":"node",
//	                "min_size":1073741824,"name_hint":"hs-data"}}
//
// and the program must exit 0 after printing exactly one JSON object: the
// fields of a backend spec (name, kind, address, namespace, bucket, node,
// farm, ...; see backends.Spec) plus an optional "secret", the namespace
// password or S3 secret key. healstore stores the secret in its secret
// store and never logs it. The new backend must lie outside avoid_domains
// at the given level.
//
// On "release" stdin carries {"action":"release","spec":{...}} with the
// spec the program printed earlier; the program gives the capacity back and
// exits 0. Its stdout is ignored.
//
// stderr is for the program's own diagnostics: when the program fails, the
// last lines of stderr go into the error (with anything that looks like a
// password masked), so a program must not print secrets there.
package command
