package provision

import (
	"context"
	"errors"
	"testing"

	"github.com/healstore/healstore/backends"
)

func spareSpecs() []backends.Spec {
	return []backends.Spec{
		{Name: "s1", Kind: backends.KindLocal, Path: "/x/1", Node: "a", Farm: "f1", Quota: 100},
		{Name: "s2", Kind: backends.KindLocal, Path: "/x/2", Node: "b", Farm: "f1", Quota: 1000},
		{Name: "s3", Kind: backends.KindLocal, Path: "/x/3", Node: "c", Farm: "f2"},
	}
}

func TestSpareProvision(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name  string
		c     Constraints
		inUse []string
		want  string // "" = ErrNoCapacity
	}{
		{"first fits", Constraints{Level: "node"}, nil, "s1"},
		{"avoid node", Constraints{Level: "node", AvoidDomains: []string{"node:a"}}, nil, "s2"},
		{"avoid farm", Constraints{Level: "farm", AvoidDomains: []string{"farm:f1"}}, nil, "s3"},
		{"min size skips small quota", Constraints{Level: "node", MinSize: 500}, nil, "s2"},
		{"no quota counts as large", Constraints{Level: "node", MinSize: 5000}, nil, "s3"},
		{"in use skipped", Constraints{Level: "node"}, []string{"s1", "s2"}, "s3"},
		{"nothing fits", Constraints{Level: "farm", AvoidDomains: []string{"farm:f1", "farm:f2"}}, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			used := map[string]bool{}
			for _, n := range tc.inUse {
				used[n] = true
			}
			p, err := NewSpare(spareSpecs(), func(n string) bool { return used[n] })
			if err != nil {
				t.Fatal(err)
			}
			spec, secret, err := p.Provision(ctx, tc.c)
			if tc.want == "" {
				if !errors.Is(err, ErrNoCapacity) {
					t.Fatalf("got %v, %v; want ErrNoCapacity", spec.Name, err)
				}
				var nc *NoCapacityError
				if !errors.As(err, &nc) || nc.Provisioner != "spare" {
					t.Fatalf("error %v is not a NoCapacityError from spare", err)
				}
				return
			}
			if err != nil || spec.Name != tc.want || secret != "" {
				t.Fatalf("got %q %q %v, want %q", spec.Name, secret, err, tc.want)
			}
		})
	}
}

func TestSpareHandsOutOnceAndRelease(t *testing.T) {
	ctx := context.Background()
	p, err := NewSpare(spareSpecs(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range 3 {
		s, _, err := p.Provision(ctx, Constraints{Level: "node"})
		if err != nil {
			t.Fatal(err)
		}
		if got[s.Name] {
			t.Fatalf("%s handed out twice", s.Name)
		}
		got[s.Name] = true
	}
	if p.Available() != 0 {
		t.Fatalf("Available = %d after taking all", p.Available())
	}
	if _, _, err := p.Provision(ctx, Constraints{Level: "node"}); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("exhausted pool: %v", err)
	}
	if err := p.Release(ctx, backends.Spec{Name: "s2"}); err != nil {
		t.Fatal(err)
	}
	if s, _, err := p.Provision(ctx, Constraints{Level: "node"}); err != nil || s.Name != "s2" {
		t.Fatalf("after release got %q %v", s.Name, err)
	}
}

func TestSpareRejectsBadPool(t *testing.T) {
	specs := spareSpecs()
	specs[1].Name = "s1"
	if _, err := NewSpare(specs, nil); err == nil {
		t.Fatal("duplicate names accepted")
	}
	if _, err := NewSpare([]backends.Spec{{Name: "x", Kind: "zdb"}}, nil); err == nil {
		t.Fatal("invalid spec accepted")
	}
}

func TestSpareHonoursContext(t *testing.T) {
	p, _ := NewSpare(spareSpecs(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := p.Provision(ctx, Constraints{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if p.Available() != 3 {
		t.Fatal("a cancelled Provision took a spare")
	}
}
