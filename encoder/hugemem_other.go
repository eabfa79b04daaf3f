//go:build !linux

package encoder

func adviseHuge([]byte) {}
