package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
)

type getOptions struct {
	json bool
}

func newGetCmd(g *globalOptions) *cobra.Command {
	o := &getOptions{}
	cmd := &cobra.Command{
		Use:   "get NAME [FILE|-]",
		Short: "Write object NAME to a file (or standard output)",
		Long: `get writes object NAME to FILE, or to standard output when FILE is - or absent.
Reads work with up to m backends lost. Exit code 3 when there is no such object.

A regular FILE (or a new one) is written to a temporary name in its directory,
synced, and renamed over FILE when complete, so a failed get leaves an
existing FILE as it was and no temporary file behind. A replaced FILE keeps
its permission bits and, when root runs get, its owner and group (it is a new
inode: other hard links to it keep the old bytes); a new FILE is created with
mode 0666 minus the umask, like cp or curl -o.
A FILE that is a symlink is followed: the file it points to is replaced (or
created, for a dangling link) and the link stays a link.
A FILE that is a device, FIFO or socket is opened and written in place.
A FILE that is a directory is a usage error (exit code 2), reported before
anything is read.`,
		Args: argsBetween(1, 2),
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return checkNames(cmd, args[0])
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			toFile := len(args) == 2 && args[1] != "-"
			// FILE is looked at before the store is opened, so a
			// directory costs nothing and says so plainly.
			var t *getTarget
			if toFile {
				var err error
				if t, err = resolveGetTarget(args[1]); err != nil {
					if errors.Is(err, errIsDir) {
						return usagef("get %s: FILE %s is a directory; get writes one file (or - for standard output)", name, args[1])
					}
					return fmt.Errorf("get %s: %w", name, err)
				}
			}
			s, err := openObjects(cmd, g)
			if err != nil {
				return err
			}
			defer s.Close()
			r, err := s.Open(cmd.Context(), name)
			if err != nil {
				return err
			}
			defer r.Close()
			var out io.Writer = g.stdout
			if toFile {
				f, err := t.open()
				if err != nil {
					return fmt.Errorf("get %s: %w", name, err)
				}
				defer t.abort()
				out = f
			}
			p := newProgress(g, "get "+name, r.Size())
			if p != nil {
				out = progressWriter{w: out, p: p}
			}
			n, err := io.Copy(out, r)
			if err != nil {
				return fmt.Errorf("get %s: %w", name, err)
			}
			p.finish()
			if toFile {
				if err := t.commit(); err != nil {
					return fmt.Errorf("get %s: %w", name, err)
				}
			}
			if o.json {
				// With data on stdout, the JSON summary goes to stderr.
				w := g.stdout
				if !toFile {
					w = g.stderr
				}
				info := r.Info()
				return json.NewEncoder(w).Encode(map[string]any{"name": info.Name, "size": n, "id": info.ID})
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print a JSON summary (to stderr when the data goes to stdout)")
	return cmd
}

var errIsDir = errors.New("is a directory")

// getTarget is where get writes FILE's bytes. A regular file, or a path
// that does not exist yet, is replaced atomically: the bytes go to a
// temporary file in the same directory that is renamed over path once
// complete. Anything else that is not a directory (a device, FIFO or
// socket) is opened as it is and written in place.
type getTarget struct {
	path    string      // FILE with symlinks followed
	old     fs.FileInfo // what is at path now; nil when nothing is
	inPlace bool

	f       *os.File // the temporary file, or path itself when inPlace
	tmpName string   // "" once renamed (or when inPlace)
}

// resolveGetTarget looks at file (following symlinks, dangling ones to
// the path they name) without changing anything.
func resolveGetTarget(file string) (*getTarget, error) {
	path := file
	fi, err := os.Lstat(path)
	for hops := 0; err == nil && fi.Mode()&fs.ModeSymlink != 0; hops++ {
		if hops == 255 {
			return nil, &fs.PathError{Op: "open", Path: file, Err: syscall.ELOOP}
		}
		// Resolve the link's directory first, so that a relative target
		// with ".." means what the kernel says it means.
		dir, derr := filepath.EvalSymlinks(filepath.Dir(path))
		if derr != nil {
			return nil, derr
		}
		if err := mayFollow(path, dir, fi); err != nil {
			return nil, err
		}
		link, lerr := os.Readlink(path)
		if lerr != nil {
			return nil, lerr
		}
		if !filepath.IsAbs(link) {
			link = filepath.Join(dir, link)
		}
		path = link
		fi, err = os.Lstat(path)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// The temporary file goes next to it: a missing directory is
		// said here, naming FILE, before the store is opened.
		dir := filepath.Dir(path)
		st, derr := os.Stat(dir)
		switch {
		case errors.Is(derr, fs.ErrNotExist):
			return nil, fmt.Errorf("%s: directory %s does not exist", file, dir)
		case derr != nil:
			return nil, fmt.Errorf("%s: %w", file, derr)
		case !st.IsDir():
			return nil, fmt.Errorf("%s: %s is not a directory", file, dir)
		}
		return &getTarget{path: path}, nil
	case err != nil:
		return nil, err
	case fi.IsDir():
		return nil, fmt.Errorf("%s: %w", file, errIsDir)
	}
	return &getTarget{path: path, old: fi, inPlace: !fi.Mode().IsRegular()}, nil
}

// open returns the file to write the object into.
func (t *getTarget) open() (*os.File, error) {
	if t.inPlace {
		f, err := os.OpenFile(t.path, os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		t.f = f
		return f, nil
	}
	// A new FILE gets 0666 minus the umask, as any created file does. A
	// replaced FILE gets its old mode at commit; until then the temporary
	// file is 0600, so no one the old FILE kept out can read it meanwhile.
	perm := fs.FileMode(0o666)
	if t.old != nil {
		perm = 0o600
	}
	dir, base := filepath.Dir(t.path), filepath.Base(t.path)
	for try := 0; ; try++ {
		name := filepath.Join(dir, "."+base+".healstore-"+strconv.FormatUint(uint64(rand.Uint32()), 10))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) && try < 100 {
			continue
		}
		if err != nil {
			return nil, err
		}
		t.f, t.tmpName = f, name
		return f, nil
	}
}

// commit completes the write: for a temporary file, it takes the old
// FILE's owner and mode, is synced, renamed over FILE, and the directory
// is synced.
func (t *getTarget) commit() error {
	if t.inPlace {
		var err error
		if m := t.old.Mode(); m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0 {
			err = t.f.Sync() // a block device: the bytes are on it when get returns
		}
		if cerr := t.f.Close(); err == nil {
			err = cerr
		}
		t.f = nil
		return err
	}
	if t.old != nil {
		if st, ok := t.old.Sys().(*syscall.Stat_t); ok {
			// Only root can give a file away; others keep their own
			// file, as cp does.
			if err := t.f.Chown(int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, syscall.EPERM) {
				return err
			}
		}
		// After the chown, which may clear set-id bits.
		if err := t.f.Chmod(t.old.Mode().Perm()); err != nil {
			return err
		}
	}
	if err := t.f.Sync(); err != nil {
		return err
	}
	err := t.f.Close()
	t.f = nil
	if err != nil {
		return err
	}
	if err := os.Rename(t.tmpName, t.path); err != nil {
		return err
	}
	t.tmpName = ""
	return syncDir(filepath.Dir(t.path))
}

// abort closes what open opened and removes the temporary file, unless
// commit renamed it. It does nothing after a successful commit.
func (t *getTarget) abort() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
	if t.tmpName != "" {
		os.Remove(t.tmpName)
		t.tmpName = ""
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync() // its error names the directory
}

// mayFollow applies the kernel's protected_symlinks rule to a link get is
// about to follow by hand (the kernel never sees this lookup): in a sticky,
// world-writable directory such as /tmp, only a link owned by the follower
// or by the directory's owner is followed. Otherwise another local user
// could point /tmp/out at /etc/passwd and have root's get replace it.
func mayFollow(link, dir string, fi fs.FileInfo) error {
	ls, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	di, err := os.Stat(dir)
	if err != nil {
		return err
	}
	ds, ok := di.Sys().(*syscall.Stat_t)
	if !ok || di.Mode()&fs.ModeSticky == 0 || di.Mode().Perm()&0o002 == 0 {
		return nil
	}
	if ls.Uid == uint32(os.Geteuid()) || ls.Uid == ds.Uid {
		return nil
	}
	return fmt.Errorf("refusing to follow the symlink %s: it belongs to uid %d in %s, a sticky world-writable directory (as the kernel's protected_symlinks would)", link, ls.Uid, dir)
}
