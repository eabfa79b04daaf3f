package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/healstore/healstore"
	"github.com/healstore/healstore/backends"
	"github.com/healstore/healstore/bench"
)

type recoverOptions struct {
	keyFile  string
	specs    []string
	secrets  string
	snapshot string
	json     bool

	backends []backends.Spec
}

func newRecoverCmd(g *globalOptions) *cobra.Command {
	o := &recoverOptions{}
	cmd := &cobra.Command{
		Use:   "recover --key KEYFILE --backend SPEC [--backend SPEC...] [--secrets FILE] DIR",
		Short: "Rebuild a lost store's metadata from its backends into DIR",
		Long: `recover rebuilds a store whose machine (metadata, cache, config) is gone, from
the master key and any reachable backend: every backend holds a sealed
pointer to the newest metadata snapshots and names the other backends.
recover restores the newest snapshot that reads back intact (older ones
when it is damaged) into DIR/meta, copies the key and secrets file into
DIR, writes DIR/healstore.toml and checks the metadata against the shards
on the backends. DIR must not exist or be empty; with the wrong key
nothing is written.

Objects committed before the restored snapshot read back; stripes written
after it are listed (their objects are not in the metadata). Stripes whose
shards are partly gone are queued for the healer.

SPEC is comma-separated key=value pairs with the config's backend keys,
or a JSON object:
  name=b1,kind=local,path=/srv/healstore/b1,node=n1
  name=z1,kind=zdb,address=10.0.0.7:9900,namespace=hs1,secret_ref=zdb/z1
  '{"name":"s1","kind":"s3","address":"10.0.0.5:7070","bucket":"healstore","access_key":"AK","secret_ref":"s3/s1"}'
node, farm and quota left out are the ones the lost store recorded.
Secrets (zdb passwords, S3 secret keys) come from --secrets, a file of
ref = "secret" lines (mode 0600), such as the lost store's secrets.toml;
a --secrets path that names no readable file is refused (nothing is
written). Without --secrets the new store gets an empty secrets file.

Then: export HEALSTORE_CONFIG=DIR/healstore.toml and start healstore daemon.

` + exitCodesHelp,
		Args: argsBetween(1, 1),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			if o.keyFile == "" {
				return usagef("recover: --key KEYFILE is required (the store's master key)")
			}
			if len(o.specs) == 0 {
				return usagef("recover: at least one --backend SPEC is required")
			}
			if cmd.Flags().Changed("secrets") {
				if err := checkSecretsFlag(o.secrets); err != nil {
					return err
				}
			}
			for _, s := range o.specs {
				spec, err := parseSpec(s)
				if err != nil {
					return usagef("recover: --backend %q: %v", s, err)
				}
				o.backends = append(o.backends, spec)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			rep, err := healstore.Recover(cmd.Context(), healstore.RecoverOptions{
				KeyFile: o.keyFile, Backends: o.backends, SecretsFile: o.secrets,
				Dir: args[0], Snapshot: o.snapshot, Logger: log,
			})
			if rep != nil && o.json {
				if jerr := json.NewEncoder(g.stdout).Encode(rep); jerr != nil && err == nil {
					err = jerr
				}
			} else if rep != nil {
				printRecoverReport(g, rep)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.keyFile, "key", "", "master key file of the lost store (required)")
	f.StringArrayVar(&o.specs, "backend", nil, "a backend of the store (repeatable; one reachable is enough)")
	f.StringVar(&o.secrets, "secrets", "", "secrets file resolving the backends' secret_ref entries")
	f.StringVar(&o.snapshot, "snapshot", "", "restore this snapshot id instead of the newest")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	return cmd
}

// checkSecretsFlag refuses a --secrets path that names no readable file,
// as a usage error (exit 2) naming the flag. healstore.Recover refuses a
// missing file too, but as a plain error (exit 1) that names no flag, and
// takes an empty path for no secrets file, which on the command line is a
// mistake.
func checkSecretsFlag(path string) error {
	if path == "" {
		return usagef("recover: --secrets is empty; give the secrets file's path, or leave --secrets out when no backend needs a secret")
	}
	f, err := os.Open(path)
	if err != nil {
		// The PathError's cause only: the message names the path itself.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return usagef("recover: --secrets %s: %v", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return usagef("recover: --secrets %s: %v", path, err)
	}
	if !st.Mode().IsRegular() {
		return usagef("recover: --secrets %s: not a regular file (a secrets file of ref = \"secret\" lines)", path)
	}
	return nil
}

// parseSpec reads a backend spec given as JSON or as key=value pairs.
func parseSpec(s string) (backends.Spec, error) {
	var spec backends.Spec
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "{") {
		dec := json.NewDecoder(strings.NewReader(s))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			return spec, fmt.Errorf("not a valid JSON spec: %v", err)
		}
		return spec, spec.ValidateInput()
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return spec, fmt.Errorf("%q is not key=value", kv)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		var err error
		switch k {
		case "name":
			spec.Name = v
		case "kind":
			spec.Kind = v
		case "path":
			spec.Path = v
		case "address":
			spec.Address = v
		case "namespace":
			spec.Namespace = v
		case "bucket":
			spec.Bucket = v
		case "prefix":
			spec.Prefix = v
		case "region":
			spec.Region = v
		case "tls":
			spec.TLS, err = strconv.ParseBool(v)
		case "access_key":
			spec.AccessKey = v
		case "secret_ref":
			spec.SecretRef = v
		case "quota":
			spec.Quota, err = bench.ParseSize(v)
		case "node":
			spec.Node = v
		case "farm":
			spec.Farm = v
		case "spare":
			spec.Spare, err = strconv.ParseBool(v)
		case "password", "secret", "secret_key":
			return spec, fmt.Errorf("secrets never go in a spec: put them in the --secrets file and name them with secret_ref")
		default:
			return spec, fmt.Errorf("unknown key %q", k)
		}
		if err != nil {
			return spec, fmt.Errorf("%s: %v", k, err)
		}
	}
	return spec, spec.ValidateInput()
}

func printRecoverReport(g *globalOptions, rep *healstore.RecoverReport) {
	w := g.stdout
	if rep.ConfigPath == "" {
		return
	}
	s := rep.Snapshot
	fmt.Fprintf(w, "recovered store %s from snapshot %s (seq %d, taken %s, %d records)\n",
		rep.StoreID, s.ID, s.Seq, s.Taken.Format("2006-01-02 15:04:05 MST"), s.Records)
	// The loss window, said even when no shard was found after the
	// snapshot: deletes, renames and inline objects leave nothing on the
	// backends to list.
	fmt.Fprintf(w, "lost: every change committed after %s (objects written, replaced, deleted or renamed since; inline objects leave no shard to find)\n",
		s.Taken.Format("2006-01-02 15:04:05 MST"))
	fmt.Fprintf(w, "config: %s\n", rep.ConfigPath)
	for _, sk := range rep.Skipped {
		fmt.Fprintf(w, "skipped newer snapshot %s (seq %d): %s\n", sk.Snapshot.ID, sk.Snapshot.Seq, sk.Error)
	}
	fmt.Fprintf(w, "pointers: %d read, %d missing, %d damaged, %d under another key\n",
		rep.Pointers.Read, rep.Pointers.Missing, rep.Pointers.Corrupt, rep.Pointers.WrongKey)
	for name, why := range rep.Unreachable {
		fmt.Fprintf(w, "unreachable backend %s: %s\n", name, why)
	}
	if len(rep.Unlisted) > 0 {
		fmt.Fprintf(w, "not checked (could not list): %s\n", strings.Join(rep.Unlisted, ", "))
	}
	fmt.Fprintf(w, "objects: %d; stripes queued for repair: %d\n", rep.Objects, rep.Queued)
	if len(rep.Damaged) > 0 {
		shown := make([]string, len(rep.Damaged))
		for i, n := range rep.Damaged {
			shown[i] = shownName(n)
		}
		fmt.Fprintf(w, "objects with too few shards left (%d): %s\n", len(rep.Damaged), strings.Join(shown, ", "))
	}
	if rep.DamagedStripeCount > 0 {
		// Which shards are gone and where they were: the backends to bring
		// back (or whose disks to look at) before giving the objects up.
		fmt.Fprintf(w, "stripes with too few shards left (%d):\n", rep.DamagedStripeCount)
		for i, ds := range rep.DamagedStripes {
			if i == 20 {
				break
			}
			fmt.Fprintf(w, "  %s\n", ds.Detail)
		}
		if more := rep.DamagedStripeCount - min(len(rep.DamagedStripes), 20); more > 0 {
			fmt.Fprintf(w, "  ... %d more (see --json)\n", more)
		}
	}
	if len(rep.MissingByBackend) > 0 {
		var per []string
		for _, name := range slices.Sorted(maps.Keys(rep.MissingByBackend)) {
			per = append(per, fmt.Sprintf("%s %d", name, rep.MissingByBackend[name]))
		}
		fmt.Fprintf(w, "shards missing by backend: %s\n", strings.Join(per, ", "))
	}
	if rep.LaterShards > 0 {
		complete := 0
		for _, ls := range rep.Later {
			if ls.Complete {
				complete++
			}
		}
		fmt.Fprintf(w, "written after the snapshot: %d shards of %d stripes (%d complete); their objects are not in the metadata:\n",
			rep.LaterShards, len(rep.Later), complete)
		for i, ls := range rep.Later {
			if i == 20 {
				fmt.Fprintf(w, "  ... %d more (see --json)\n", len(rep.Later)-20)
				break
			}
			var where []string
			for _, sh := range ls.Shards {
				where = append(where, fmt.Sprintf("%d@%s", sh.Index, sh.Backend))
			}
			fmt.Fprintf(w, "  stripe %s k=%d m=%d %d bytes: %s\n", ls.Stripe, ls.K, ls.M, ls.Bytes, strings.Join(where, " "))
		}
	}
	fmt.Fprintf(w, "next: export HEALSTORE_CONFIG=%s; healstore daemon\n", rep.ConfigPath)
}
