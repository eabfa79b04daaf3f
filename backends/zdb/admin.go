package zdb

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/gomodule/redigo/redis"
	"github.com/healstore/healstore/backends"
)

// ErrNamespaceExists is returned by CreateNamespace for a name in use.
var ErrNamespaceExists = errors.New("zdb namespace already exists")

// Admin is an administrative connection to a 0-db server, for provisioning
// namespaces and for tests. It is not safe for concurrent use.
type Admin struct {
	addr string
	c    *conn
}

// DialAdmin connects to addr and authenticates with the admin password by
// challenge (the password is not sent). An empty password skips AUTH, for a
// server started without --admin, where every client is admin.
func DialAdmin(ctx context.Context, addr, adminPassword string) (*Admin, error) {
	a := &Admin{addr: addr}
	c, err := dial(ctx, addr)
	if err != nil {
		return nil, a.fail("auth", "", err)
	}
	if adminPassword != "" {
		ch, err := challenge(ctx, c)
		if err == nil {
			_, err = c.do(ctx, "AUTH", "SECURE", secureHash(ch, adminPassword))
		}
		// A server without --admin says so; every client is admin there.
		var re redis.Error
		if errors.As(err, &re) && string(re) == "Authentication disabled" {
			err = nil
		}
		if err != nil {
			c.close()
			return nil, a.fail("auth", "", err)
		}
	}
	a.c = c
	return a, nil
}

func (a *Admin) fail(op, ns string, err error) error {
	return backends.Wrap("zdb-admin "+a.addr, op, ns, kindOf(err), err)
}

func (a *Admin) ok(ctx context.Context, op, ns string, args ...any) error {
	reply, err := a.c.do(ctx, args[0].(string), args[1:]...)
	if err != nil {
		return a.fail(op, ns, err)
	}
	if s, _ := redis.String(reply, nil); s != "OK" {
		return a.fail(op, ns, fmt.Errorf("%w: %v answered %v", errCorrupt, args[0], reply))
	}
	return nil
}

// CreateNamespace creates ns in user-key mode with maxSize bytes (0 = no
// limit) and, when password is not empty, sets it and makes the namespace
// private, so nothing can be read or written without the password.
func (a *Admin) CreateNamespace(ctx context.Context, ns, password string, maxSize int64) error {
	if err := a.ok(ctx, "nsnew", ns, "NSNEW", ns); err != nil {
		var re redis.Error
		if errors.As(err, &re) && string(re) == "This namespace is not available" {
			return fmt.Errorf("zdb admin %s: namespace %s: %w", a.addr, ns, ErrNamespaceExists)
		}
		return err
	}
	if password != "" {
		if err := a.ok(ctx, "nsset", ns, "NSSET", ns, "password", password); err != nil {
			return err
		}
		if err := a.ok(ctx, "nsset", ns, "NSSET", ns, "public", "0"); err != nil {
			return err
		}
	}
	return a.SetMaxSize(ctx, ns, maxSize)
}

// SetMaxSize sets the namespace's size limit in bytes (0 = none).
func (a *Admin) SetMaxSize(ctx context.Context, ns string, maxSize int64) error {
	if maxSize < 0 {
		return fmt.Errorf("zdb admin: negative maxsize %d", maxSize)
	}
	return a.ok(ctx, "nsset", ns, "NSSET", ns, "maxsize", strconv.FormatInt(maxSize, 10))
}

// DeleteNamespace removes ns and its data. A missing namespace is not an
// error.
func (a *Admin) DeleteNamespace(ctx context.Context, ns string) error {
	err := a.ok(ctx, "nsdel", ns, "NSDEL", ns)
	var re redis.Error
	if errors.As(err, &re) && string(re) == "This namespace doesn't exists" {
		return nil
	}
	return err
}

// NamespaceExists reports whether ns exists (NSINFO needs no password).
func (a *Admin) NamespaceExists(ctx context.Context, ns string) (bool, error) {
	_, err := a.c.do(ctx, "NSINFO", ns)
	var re redis.Error
	if errors.As(err, &re) && string(re) == "Namespace not found" {
		return false, nil
	}
	if err != nil {
		return false, a.fail("nsinfo", ns, err)
	}
	return true, nil
}

// Close closes the connection.
func (a *Admin) Close() error {
	a.c.close()
	return nil
}
