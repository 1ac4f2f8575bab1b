// gopeer: etcd 3.4.23's own rafthttp Transport (Debian's golang-etcd-server-dev) behind
// the same JSON-lines interface as `rafthttp peer`, so the Rust tests can drive the
// real Go transport from the other end of every stream, pipeline and snapshot.
//
//	stdin:  one message per line (the schema `rafthttp decode` prints), or a command:
//	        {"cmd":"snapshot","to":"1","index":N,"term":T,"size":BYTES}
//	        {"cmd":"cut"|"mend"|"remove","peer":"1"}, {"cmd":"add","peer":"1","url":"http://…"}
//	stdout: every message Raft.Process receives (MsgSnap lines add "db_bytes")
//	stderr: events: started, active, inactive, unreachable, snapshot, snapshot_sent, error
//
// Build (GOPATH mode, no module proxy):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o gopeer main.go
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/etcdserver/api/rafthttp"
	"go.etcd.io/etcd/etcdserver/api/snap"
	stats "go.etcd.io/etcd/etcdserver/api/v2stats"
	"go.etcd.io/etcd/pkg/types"
	"go.etcd.io/etcd/raft"
	"go.etcd.io/etcd/raft/raftpb"
	"go.etcd.io/etcd/version"
	"go.uber.org/zap"
)

type entryJSON struct {
	Type    string  `json:"type"`
	Term    uint64  `json:"term"`
	Index   uint64  `json:"index"`
	DataLen int     `json:"data_len"`
	DataHex *string `json:"data_hex,omitempty"`
}

type snapshotJSON struct {
	Index          uint64   `json:"index"`
	Term           uint64   `json:"term"`
	Voters         []string `json:"voters"`
	Learners       []string `json:"learners"`
	VotersOutgoing []string `json:"voters_outgoing"`
	LearnersNext   []string `json:"learners_next"`
	AutoLeave      bool     `json:"auto_leave"`
	DataLen        int      `json:"data_len"`
	DataHex        *string  `json:"data_hex,omitempty"`
}

type messageJSON struct {
	Type       string        `json:"type"`
	To         string        `json:"to"`
	From       string        `json:"from"`
	Term       uint64        `json:"term"`
	LogTerm    uint64        `json:"logTerm"`
	Index      uint64        `json:"index"`
	Commit     uint64        `json:"commit"`
	Reject     bool          `json:"reject"`
	RejectHint uint64        `json:"rejectHint"`
	Entries    []entryJSON   `json:"entries"`
	ContextHex *string       `json:"context_hex,omitempty"`
	Snapshot   *snapshotJSON `json:"snapshot,omitempty"`
	DBBytes    *int64        `json:"db_bytes,omitempty"`
	// commands
	Cmd  string `json:"cmd,omitempty"`
	Peer string `json:"peer,omitempty"`
	URL  string `json:"url,omitempty"`
	Size int64  `json:"size,omitempty"`
}

func hexID(id uint64) string { return strconv.FormatUint(id, 16) }

func parseID(s string) uint64 {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
	if err != nil {
		fatal("bad id %q: %v", s, err)
	}
	return v
}

func hexOf(b []byte) *string {
	if b == nil {
		return nil
	}
	s := hex.EncodeToString(b)
	return &s
}

func bytesOf(s *string) []byte {
	if s == nil {
		return nil
	}
	b, err := hex.DecodeString(*s)
	if err != nil {
		fatal("bad hex %q", *s)
	}
	if b == nil {
		b = []byte{}
	}
	return b
}

func hexIDs(ids []uint64) []string {
	out := []string{}
	for _, id := range ids {
		out = append(out, hexID(id))
	}
	return out
}

func toJSON(m raftpb.Message) messageJSON {
	j := messageJSON{
		Type: m.Type.String(), To: hexID(m.To), From: hexID(m.From), Term: m.Term, LogTerm: m.LogTerm,
		Index: m.Index, Commit: m.Commit, Reject: m.Reject, RejectHint: m.RejectHint,
		Entries: []entryJSON{}, ContextHex: hexOf(m.Context),
	}
	for _, e := range m.Entries {
		j.Entries = append(j.Entries, entryJSON{Type: e.Type.String(), Term: e.Term, Index: e.Index, DataLen: len(e.Data), DataHex: hexOf(e.Data)})
	}
	s := m.Snapshot
	cs := s.Metadata.ConfState
	if !raft.IsEmptySnap(s) || s.Data != nil || s.Metadata.Term != 0 || len(cs.Voters) > 0 {
		j.Snapshot = &snapshotJSON{
			Index: s.Metadata.Index, Term: s.Metadata.Term, Voters: hexIDs(cs.Voters), Learners: hexIDs(cs.Learners),
			VotersOutgoing: hexIDs(cs.VotersOutgoing), LearnersNext: hexIDs(cs.LearnersNext), AutoLeave: cs.AutoLeave,
			DataLen: len(s.Data), DataHex: hexOf(s.Data),
		}
	}
	return j
}

func enumValue(names map[string]int32, s string) int32 {
	if v, ok := names[s]; ok {
		return v
	}
	v, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		fatal("unknown type %q", s)
	}
	return int32(v)
}

func fromJSON(j messageJSON) raftpb.Message {
	m := raftpb.Message{
		Type: raftpb.MessageType(enumValue(raftpb.MessageType_value, j.Type)), To: parseID(j.To), From: parseID(j.From),
		Term: j.Term, LogTerm: j.LogTerm, Index: j.Index, Commit: j.Commit, Reject: j.Reject, RejectHint: j.RejectHint,
		Context: bytesOf(j.ContextHex),
	}
	for _, e := range j.Entries {
		m.Entries = append(m.Entries, raftpb.Entry{Type: raftpb.EntryType(enumValue(raftpb.EntryType_value, e.Type)), Term: e.Term, Index: e.Index, Data: bytesOf(e.DataHex)})
	}
	if s := j.Snapshot; s != nil {
		ids := func(v []string) []uint64 {
			var out []uint64
			for _, x := range v {
				out = append(out, parseID(x))
			}
			return out
		}
		m.Snapshot = raftpb.Snapshot{Data: bytesOf(s.DataHex), Metadata: raftpb.SnapshotMetadata{
			Index: s.Index, Term: s.Term,
			ConfState: raftpb.ConfState{Voters: ids(s.Voters), Learners: ids(s.Learners), VotersOutgoing: ids(s.VotersOutgoing), LearnersNext: ids(s.LearnersNext), AutoLeave: s.AutoLeave},
		}}
	}
	return m
}

var outMu sync.Mutex
var stdout = bufio.NewWriterSize(os.Stdout, 1<<20)

func emit(w io.Writer, v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fatal("json: %v", err)
	}
	outMu.Lock()
	defer outMu.Unlock()
	w.Write(append(b, '\n'))
	if w == io.Writer(stdout) {
		stdout.Flush()
	}
}

func event(kv ...interface{}) {
	m := map[string]interface{}{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	emit(os.Stderr, m)
}

func fatal(f string, a ...interface{}) {
	event("event", "error", "error", fmt.Sprintf(f, a...))
	os.Exit(2)
}

type printer struct{ snapDir string }

func (p *printer) Process(ctx context.Context, m raftpb.Message) error {
	j := toJSON(m)
	if m.Type == raftpb.MsgSnap {
		if fi, err := os.Stat(filepath.Join(p.snapDir, fmt.Sprintf("%016x.snap.db", m.Snapshot.Metadata.Index))); err == nil {
			n := fi.Size()
			j.DBBytes = &n
		}
	}
	emit(stdout, j)
	return nil
}
func (p *printer) IsIDRemoved(id uint64) bool  { return false }
func (p *printer) ReportUnreachable(id uint64) { event("event", "unreachable", "peer", hexID(id)) }
func (p *printer) ReportSnapshot(id uint64, s raft.SnapshotStatus) {
	status := "finish"
	if s == raft.SnapshotFailure {
		status = "failure"
	}
	event("event", "snapshot", "peer", hexID(id), "status", status)
}

// pattern yields size bytes of i*7 % 251, the Rust tests' snapshot pattern.
type pattern struct{ off, size int64 }

func (r *pattern) Read(b []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n := int64(len(b))
	if left := r.size - r.off; n > left {
		n = left
	}
	for i := int64(0); i < n; i++ {
		b[i] = byte((r.off + i) * 7 % 251)
	}
	r.off += n
	return int(n), nil
}

type peerFlags []string

func (p *peerFlags) String() string     { return strings.Join(*p, ",") }
func (p *peerFlags) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	id := flag.String("id", "", "member ID (hex)")
	cluster := flag.String("cluster-id", "", "cluster ID (hex)")
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	ver := flag.String("server-version", version.Version, "advertised X-Server-Version")
	var peers peerFlags
	flag.Var(&peers, "peer", "ID=URL (repeatable)")
	flag.Parse()
	version.Version = *ver

	snapDir, err := ioutil.TempDir("", "gopeer-snap")
	if err != nil {
		fatal("%v", err)
	}
	defer os.RemoveAll(snapDir)
	ln, err := rafthttp.NewListener(url.URL{Scheme: "http", Host: *listen}, nil)
	if err != nil {
		fatal("listen: %v", err)
	}
	self := "http://" + ln.Addr().(*net.TCPAddr).String()
	lg := zap.NewNop()
	if os.Getenv("GOPEER_LOG") != "" {
		lg, _ = zap.NewDevelopment()
	}
	localID := types.ID(parseID(*id))
	tr := &rafthttp.Transport{
		Logger: lg, DialTimeout: time.Second, ID: localID, URLs: types.MustNewURLs([]string{self}),
		ClusterID: types.ID(parseID(*cluster)), Raft: &printer{snapDir: snapDir}, Snapshotter: snap.New(lg, snapDir),
		ServerStats: stats.NewServerStats("", ""), LeaderStats: stats.NewLeaderStats(localID.String()),
		ErrorC: make(chan error, 16),
	}
	if err := tr.Start(); err != nil {
		fatal("start: %v", err)
	}
	srv := &http.Server{Handler: tr.Handler(), ReadTimeout: 5 * time.Minute, ErrorLog: log.New(ioutil.Discard, "", 0)}
	go srv.Serve(ln)
	known := map[uint64]bool{}
	for _, p := range peers {
		kv := strings.SplitN(p, "=", 2)
		if len(kv) != 2 {
			fatal("bad -peer %q", p)
		}
		pid := parseID(kv[0])
		known[pid] = true
		tr.AddPeer(types.ID(pid), strings.Split(kv[1], ","))
	}
	event("event", "started", "id", hexID(uint64(localID)), "url", self, "version", version.Version)
	go func() {
		for e := range tr.ErrorC {
			event("event", "error", "error", e.Error())
		}
	}()
	go func() {
		active := map[uint64]bool{}
		for {
			for pid := range known {
				a := !tr.ActiveSince(types.ID(pid)).IsZero()
				if prev, seen := active[pid]; !seen || prev != a {
					active[pid] = a
					kind := "inactive"
					if a {
						kind = "active"
					}
					event("event", kind, "peer", hexID(pid))
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	for in.Scan() {
		var j messageJSON
		if err := json.Unmarshal(in.Bytes(), &j); err != nil {
			event("event", "error", "error", "stdin: "+err.Error())
			continue
		}
		switch j.Cmd {
		case "":
			tr.Send([]raftpb.Message{fromJSON(j)})
		case "snapshot":
			m := raftpb.Message{Type: raftpb.MsgSnap, To: parseID(j.To), From: uint64(localID), Term: j.Term,
				Snapshot: raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: j.Index, Term: j.Term}}}
			sm := snap.NewMessage(m, ioutil.NopCloser(&pattern{size: j.Size}), j.Size)
			tr.SendSnapshot(*sm)
			go func(to string) { ok := <-sm.CloseNotify(); event("event", "snapshot_sent", "peer", to, "ok", ok) }(j.To)
		case "cut":
			tr.CutPeer(types.ID(parseID(j.Peer)))
		case "mend":
			tr.MendPeer(types.ID(parseID(j.Peer)))
		case "remove":
			tr.RemovePeer(types.ID(parseID(j.Peer)))
			delete(known, parseID(j.Peer))
		case "add":
			tr.AddPeer(types.ID(parseID(j.Peer)), []string{j.URL})
			known[parseID(j.Peer)] = true
		default:
			event("event", "error", "error", "unknown cmd "+j.Cmd)
		}
	}
	select {}
}
