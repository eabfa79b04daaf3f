// Package throttle paces the healer's I/O: a bytes-per-second limiter whose
// rate can change while callers wait, so an operator who raises or lowers
// the rebuild cap sees the new pace within a fraction of a second rather than
// after the current backlog of reservations drains.
package throttle
