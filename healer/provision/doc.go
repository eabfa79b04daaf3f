// Package provision finds new capacity for the healer. A Provisioner returns a
// fresh, reachable backend spec that lies outside the failure domains the
// caller names; the healer registers it, writes its identity marker and uses
// it as a rebuild target.
//
// Two implementations live here: Spare hands out a fixed pool of backends
// listed in the config (the warm spares an operator set aside), and Local
// creates new local-directory backends under one directory, optionally each
// served by its own local S3 gateway process, for single-host setups, demos
// and tests. The command and tfgrid sub-packages provision elsewhere.
package provision
