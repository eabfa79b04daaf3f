package plan

import "time"

// State is a backend's state, spelled as the metastore records it.
type State string

// Backend states. Up, Suspect, Down and Replaced are set by the monitor;
// Draining and Retired by the operator.
const (
	Up       State = "up"
	Suspect  State = "suspect"
	Down     State = "down"
	Draining State = "draining"
	Retired  State = "retired"
	Replaced State = "replaced"
)

// Marker is what a probe found in the backend's identity marker.
type Marker int

// Marker findings.
const (
	// MarkerUnknown: not checked (the probe failed before reading it).
	MarkerUnknown Marker = iota
	// MarkerOK: present and naming this store and this backend.
	MarkerOK
	// MarkerMissing: the backend answers but holds no marker: it was wiped
	// (or replaced by an empty one under the same address).
	MarkerMissing
	// MarkerForeign: the marker names another store or another backend.
	MarkerForeign
)

// Health is what the monitor remembers of one backend between probes.
type Health struct {
	State State
	// Since is when State was entered; for Suspect the grace period runs
	// from it.
	Since time.Time
	// Failures counts consecutive failed observations (0 = last answered).
	Failures int
	// LastOK is the last time the backend answered.
	LastOK time.Time
}

// Reachable reports whether the last observation found the backend answering.
func (h Health) Reachable() bool { return h.Failures == 0 }

// Observation is one probe result, or one error heard on the data path
// (OK false, Marker unknown).
type Observation struct {
	At     time.Time
	OK     bool
	Marker Marker
}

// MonitorPolicy tunes the state machine.
type MonitorPolicy struct {
	// SuspectAfter is how many consecutive failures make an up backend
	// suspect (values below 1 mean 1).
	SuspectAfter int
	// Grace is how long a backend stays suspect before it is declared
	// down. 0 declares it down at the failure that made it suspect.
	Grace time.Duration
}

// Event is something the healer must act on.
type Event string

// Events.
const (
	// EventSuspect: the backend stopped answering. Stripes that the loss
	// leaves at margin 0 must be repaired at once; the rest wait out the grace.
	EventSuspect Event = "suspect"
	// EventDown: the grace ran out; rebuild everything the backend held and
	// find replacement capacity.
	EventDown Event = "down"
	// EventRecovered: a suspect or down backend answers again with its marker.
	EventRecovered Event = "recovered"
	// EventWiped: the backend answers without its marker (or with a foreign
	// one): every shard it held is gone; queue them all, no grace.
	EventWiped Event = "wiped"
)

// Observe advances one backend's health by one observation and says what
// happened. Operator states (Draining, Retired) and Replaced never change
// here: only the failure count and LastOK move, so the planner still knows
// whether a draining backend can serve as a source (one that answers with
// a foreign marker cannot: it counts as failing).
func Observe(h Health, o Observation, p MonitorPolicy) (Health, []Event) {
	suspectAfter := max(p.SuspectAfter, 1)
	if h.State == Draining && o.OK && o.Marker == MarkerForeign {
		// Another store's backend now answers at this address (see
		// below). Draining stays draining, but the backend counts as
		// not answering: nothing on it is read, listed or deleted any
		// more (garbage collection, and the orphan sweep, which would
		// take every shard of the other store for an orphan of this
		// one), and the drain rebuilds its shards from the others.
		h.Failures++
		return h, []Event{EventWiped}
	}
	if o.OK {
		h.Failures = 0
		h.LastOK = o.At
	} else {
		h.Failures++
	}
	var ev []Event
	switch h.State {
	case Draining, Retired, Replaced:
		if o.OK && (o.Marker == MarkerMissing || o.Marker == MarkerForeign) && h.State == Draining {
			ev = append(ev, EventWiped)
		}
		return h, ev
	}
	if o.OK {
		switch o.Marker {
		case MarkerMissing:
			// Up but empty: it may keep serving (the healer writes a fresh
			// marker), but nothing it held can be trusted to be there.
			if h.State != Up {
				h.State, h.Since = Up, o.At
			}
			return h, []Event{EventWiped}
		case MarkerForeign:
			// Another store's backend now answers at this address; taking
			// it over could destroy that store's data, so it is out at once.
			if h.State != Down {
				h.State, h.Since = Down, o.At
				ev = append(ev, EventDown)
			}
			return h, append(ev, EventWiped)
		}
		if h.State == Suspect || h.State == Down {
			h.State, h.Since = Up, o.At
			ev = append(ev, EventRecovered)
		}
		return h, ev
	}
	if h.State == Up && h.Failures >= suspectAfter {
		h.State, h.Since = Suspect, o.At
		ev = append(ev, EventSuspect)
	}
	if h.State == Suspect && o.At.Sub(h.Since) >= p.Grace {
		h.State, h.Since = Down, o.At
		ev = append(ev, EventDown)
	}
	return h, ev
}
