// Package backendtest is the one conformance suite every backends.Backend
// implementation and decorator runs: Run(t, Factory). A kind plugs in with a
// Factory of a few functions; the suite checks the contracts written on
// backends.Backend (round trips up to the size limit, overwrite, idempotent
// delete, listing, typed errors, deadlines, outages, credentials, quotas and
// probe figures).
//
// Abilities a kind lacks (a directory has no credentials) are left out by
// setting the Factory hook to nil; the suite logs that and runs the rest, so
// a green run never hides a skipped check behind a skip line.
package backendtest
