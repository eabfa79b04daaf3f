// Package tfgrid provisions 0-db namespaces on the ThreeFold Grid, so a
// store that lost a backend gets a new one without a human.
//
// It works the way a user's own tools do, because the grid's Go SDK is not
// something healstore can depend on:
//
//  1. Node choice through the grid proxy's public HTTP API (ProxyClient):
//     nodes that are up, have the free HDD (or SSD) the namespace needs,
//     are not rented by another twin, lie in an allowed farm, and are not
//     in a failure domain the stripe set already uses. The node id and farm
//     id become the backend's node and farm labels. One node is picked at
//     random, weighted by free capacity; nodes whose deployment failed
//     recently are skipped.
//  2. Deployment with the tfcmd command: `tfcmd deploy zdb --project_name P
//     --size GB --node ID --password PW --mode user`, then `tfcmd get zdb P`
//     for the addresses, port and namespace. `tfcmd cancel P` on Release and
//     after any failed step, so no contract is left behind.
//  3. A probe: the namespace is opened with its password and a probe key
//     is written, read and deleted before the spec is returned.
//
// Each namespace gets its own random password. It is returned to the
// caller (who keeps it in the 0600 secret store) and never logged; tfcmd's
// output, which repeats it, is never logged either.
//
// A ledger file records every deployment (project, node, farm, size,
// state; no secrets) so the max_backends cap survives restarts and a
// deployment interrupted by a crash is cancelled at the next start.
package tfgrid
