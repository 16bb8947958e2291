package redisstore

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/hallpass/hallpass"
	"github.com/hallpass/hallpass/internal/unixms"
)

// Hash fields. Metadata fields start with "m:", data keys with "d:", so no
// data key can collide with metadata, whatever it spells. An empty string
// or a zero time is not stored: a missing field reads back as the zero
// value. The Lua scripts know the Meta and Touch field names in this
// order (META and TOUCH in the prelude).
const (
	fHandle    = "m:h"
	fUser      = "m:u"
	fAuthTime  = "m:at"
	fAuthLevel = "m:al"
	fRemember  = "m:rm"
	fReauthAt  = "m:ra"
	fPersist   = "m:p"
	fAbsolute  = "m:ad"
	fLastSeen  = "m:ls"
	fIdle      = "m:id"
	fLastIP    = "m:ip"
	fLastUA    = "m:ua"
	fCreatedAt = "m:ca"
	fCreatedIP = "m:ci"
	fCreatedUA = "m:cu"
	fVersion   = "m:v"
	dataPrefix = "d:"
)

var errCorrupt = errors.New("stored session is malformed")

// ms is t in unix milliseconds, clamped (package unixms): the scripts
// compare times as Lua numbers, exact only up to 2^53.
func ms(t time.Time) int64 { return unixms.From(t) }

func msString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(ms(t), 10)
}

func boolString(b bool) string {
	if b {
		return "1"
	}
	return ""
}

// appendPair appends a field and its value unless the value is empty.
func appendPair(args []string, field, value string) []string {
	if value == "" {
		return args
	}
	return append(args, field, value)
}

// appendRecord appends r's fields as HSET pairs, with version v.
func appendRecord(args []string, r *hallpass.Record, v int64) []string {
	args = appendPair(args, fHandle, r.Handle)
	args = appendPair(args, fCreatedAt, msString(r.CreatedAt))
	args = appendPair(args, fCreatedIP, r.CreatedIP)
	args = appendPair(args, fCreatedUA, r.CreatedUA)
	args = append(args, fVersion, strconv.FormatInt(v, 10))
	m := metaValues(&r.Meta)
	for i, f := range [...]string{fUser, fAuthTime, fAuthLevel, fRemember, fReauthAt, fPersist, fAbsolute} {
		args = appendPair(args, f, m[i])
	}
	t := touchValues(&r.Touch)
	for i, f := range [...]string{fLastSeen, fIdle, fLastIP, fLastUA} {
		args = appendPair(args, f, t[i])
	}
	for k, v := range r.Data {
		// string(v) copies: the caller may reuse v once we return, and a
		// cancelled call returns while the command may still be queued.
		args = append(args, dataPrefix+k, string(v))
	}
	return args
}

// metaValues returns Meta in the order of the prelude's META.
func metaValues(m *hallpass.Meta) [7]string {
	return [7]string{m.UserID, msString(m.AuthTime), m.AuthLevel, boolString(m.Remembered),
		msString(m.ReauthAt), boolString(m.Persistent), msString(m.AbsoluteDeadline)}
}

// touchValues returns Touch in the order of the prelude's TOUCH.
func touchValues(t *hallpass.Touch) [4]string {
	return [4]string{msString(t.LastSeen), msString(t.IdleDeadline), t.LastIP, t.LastUA}
}

// appendDelta appends d in the layout the prelude's apply reads.
func appendDelta(args []string, d *hallpass.Delta) []string {
	args = append(args, boolString(d.Clear), strconv.Itoa(len(d.Remove)), strconv.Itoa(len(d.Set)),
		boolString(d.Meta != nil), boolString(d.Touch != nil))
	for _, k := range d.Remove {
		args = append(args, dataPrefix+k)
	}
	for k, v := range d.Set {
		args = append(args, dataPrefix+k, string(v))
	}
	if d.Meta != nil {
		m := metaValues(d.Meta)
		args = append(args, m[:]...)
	}
	if d.Touch != nil {
		t := touchValues(d.Touch)
		args = append(args, t[:]...)
	}
	return args
}

// deltaArgs is how many arguments appendDelta appends.
func deltaArgs(d *hallpass.Delta) int {
	return 5 + len(d.Remove) + 2*len(d.Set) + 7 + 4
}

// decoder builds a Record from hash fields. Strings and JSON values alias
// the reply's bytes, which rueidis allocates for each reply and never
// changes afterwards; records are read-only and JSON values are never
// mutated (see hallpass.Store), so sharing them is safe and saves a copy
// of every value on every decode.
type decoder struct {
	r    *hallpass.Record
	size int // bytes of data values, to decide whether to memoize
	err  error
}

func newDecoder(key hallpass.Key, dataKeys int) decoder {
	r := &hallpass.Record{Key: key}
	if dataKeys > 0 {
		r.Data = make(map[string]json.RawMessage, dataKeys)
	}
	return decoder{r: r}
}

func (d *decoder) field(f, v string) {
	r := d.r
	if strings.HasPrefix(f, dataPrefix) {
		if r.Data == nil {
			r.Data = make(map[string]json.RawMessage)
		}
		r.Data[f[len(dataPrefix):]] = json.RawMessage(unsafe.Slice(unsafe.StringData(v), len(v)))
		d.size += len(v)
		return
	}
	switch f {
	case fHandle:
		r.Handle = v
	case fUser:
		r.UserID = v
	case fAuthTime:
		r.AuthTime = d.time(v)
	case fAuthLevel:
		r.AuthLevel = v
	case fRemember:
		r.Remembered = v == "1"
	case fReauthAt:
		r.ReauthAt = d.time(v)
	case fPersist:
		r.Persistent = v == "1"
	case fAbsolute:
		r.AbsoluteDeadline = d.time(v)
	case fLastSeen:
		r.LastSeen = d.time(v)
	case fIdle:
		r.IdleDeadline = d.time(v)
	case fLastIP:
		r.LastIP = v
	case fLastUA:
		r.LastUA = v
	case fCreatedAt:
		r.CreatedAt = d.time(v)
	case fCreatedIP:
		r.CreatedIP = v
	case fCreatedUA:
		r.CreatedUA = v
	case fVersion:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			d.err = errCorrupt
		}
		r.Version = n
	}
	// Unknown metadata fields are skipped, so a newer writer sharing the
	// server does not break this one.
}

func (d *decoder) time(v string) time.Time {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		d.err = errCorrupt
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// record returns the decoded record, or nil if there were no fields (the
// key does not exist), or an error if a stored record lacks its version.
func (d *decoder) record(fields int) (*hallpass.Record, error) {
	if fields == 0 {
		return nil, nil
	}
	if d.err == nil && d.r.Version == 0 {
		d.err = errCorrupt
	}
	return d.r, d.err
}

// decodeMap decodes an HGETALL reply.
func decodeMap(key hallpass.Key, m map[string]string) (*hallpass.Record, int, error) {
	n := 0
	for f := range m {
		if strings.HasPrefix(f, dataPrefix) {
			n++
		}
	}
	d := newDecoder(key, n)
	for f, v := range m {
		d.field(f, v)
	}
	r, err := d.record(len(m))
	return r, d.size, err
}

// decodePairs decodes a flat field/value list, as HGETALL returns to Lua.
func decodePairs(key hallpass.Key, pairs []string) (*hallpass.Record, error) {
	n := 0
	for i := 0; i+1 < len(pairs); i += 2 {
		if strings.HasPrefix(pairs[i], dataPrefix) {
			n++
		}
	}
	d := newDecoder(key, n)
	for i := 0; i+1 < len(pairs); i += 2 {
		d.field(pairs[i], pairs[i+1])
	}
	return d.record(len(pairs) / 2)
}

// member is how user indexes name a session: its key in hex.
func member(k hallpass.Key) string { return hex.EncodeToString(k[:]) }

func parseMember(m string) (hallpass.Key, bool) {
	var k hallpass.Key
	if len(m) != 2*len(k) {
		return k, false
	}
	_, err := hex.Decode(k[:], []byte(m))
	return k, err == nil
}

// appendData appends d, which has no Meta, in the layout dataScript reads,
// and returns where the set pairs begin.
func appendData(args []string, d *hallpass.Delta) ([]string, int) {
	var t hallpass.Touch
	touch := ""
	if d.Touch != nil {
		t, touch = *d.Touch, "1"
	}
	tv := touchValues(&t)
	args = append(args, boolString(d.Clear), strconv.Itoa(len(d.Remove)), touch, tv[0], tv[1], tv[2], tv[3])
	for _, k := range d.Remove {
		args = append(args, dataPrefix+k)
	}
	args = append(args, fVersion, "")
	at := len(args)
	for k, v := range d.Set {
		// string(v) copies, as the caller may reuse v; the record the
		// write leaves shares the copy (see nextRecord).
		args = append(args, dataPrefix+k, string(v))
	}
	return args, at
}

// nextRecord returns the record dataScript made, as version v, by applying
// d to base, where args are the arguments it was sent and set pairs begin
// at index at. It is what a Load would decode afterwards: times in whole
// milliseconds, activity moved forward by the script's rule, empty data as
// nil. Set values alias args, as decoded values alias a reply.
func nextRecord(base *hallpass.Record, d *hallpass.Delta, v int64, args []string, at int) *hallpass.Record {
	r := *base
	r.Version = v
	if d.Clear || len(d.Remove) > 0 || len(d.Set) > 0 {
		n := len(d.Set)
		if !d.Clear {
			n += len(base.Data)
		}
		data := make(map[string]json.RawMessage, n)
		if !d.Clear {
			for k, x := range base.Data {
				data[k] = x
			}
		}
		for _, k := range d.Remove {
			delete(data, k)
		}
		for i := at; i+1 < len(args); i += 2 {
			data[args[i][len(dataPrefix):]] = json.RawMessage(unsafe.Slice(unsafe.StringData(args[i+1]), len(args[i+1])))
		}
		if len(data) == 0 {
			data = nil
		}
		r.Data = data
	}
	if t := d.Touch; t != nil {
		if newerMS(t.LastSeen, r.LastSeen) {
			r.LastSeen = time.UnixMilli(ms(t.LastSeen))
			if t.LastIP != "" {
				r.LastIP = t.LastIP
			}
			if t.LastUA != "" {
				r.LastUA = t.LastUA
			}
		}
		if newerMS(t.IdleDeadline, r.IdleDeadline) {
			r.IdleDeadline = time.UnixMilli(ms(t.IdleDeadline))
		}
	}
	return &r
}

// newerMS is the scripts' newer: whether t, in whole milliseconds, is
// later than cur, or cur is unset. A zero t is never newer.
func newerMS(t, cur time.Time) bool {
	if t.IsZero() {
		return false
	}
	return cur.IsZero() || ms(t) > ms(cur)
}
