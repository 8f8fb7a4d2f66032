package main

import (
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"sort"
)

// The control API (loopback HTTP, bearer token) used by labctl:
//
//	GET  /state                                   all VMs and disks with CBT state
//	POST /write     {"vm","key","writes":[{"offset","data"(base64)}]}
//	POST /reset-cbt {"vm","key"}
//	POST /grow      {"vm","key","size"}
//	POST /corrupt-cbt {"vm","key","fault"}      fault: FileFault | InvalidArgument
func (l *lab) startControl(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/state", l.handle(func(r *http.Request) (interface{}, error) {
		return map[string]interface{}{"vms": l.describeVMs(), "snapshots": l.describeSnapshots()}, nil
	}))
	mux.HandleFunc("/write", l.handle(func(r *http.Request) (interface{}, error) {
		var req struct {
			VM     string       `json:"vm"`
			Key    int32        `json:"key"`
			Writes []guestWrite `json:"writes"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			return nil, err
		}
		written, err := l.write(req.VM, req.Key, req.Writes)
		if err != nil {
			return nil, err
		}
		return map[string]interface{}{"written": written}, nil
	}))
	mux.HandleFunc("/reset-cbt", l.handle(func(r *http.Request) (interface{}, error) {
		var req struct {
			VM  string `json:"vm"`
			Key int32  `json:"key"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			return nil, err
		}
		return l.resetCBT(req.VM, req.Key)
	}))
	mux.HandleFunc("/corrupt-cbt", l.handle(func(r *http.Request) (interface{}, error) {
		var req struct {
			VM    string `json:"vm"`
			Key   int32  `json:"key"`
			Fault string `json:"fault"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			return nil, err
		}
		return l.corruptCBT(req.VM, req.Key, req.Fault)
	}))
	mux.HandleFunc("/grow", l.handle(func(r *http.Request) (interface{}, error) {
		var req struct {
			VM   string `json:"vm"`
			Key  int32  `json:"key"`
			Size int64  `json:"size"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			return nil, err
		}
		return l.grow(req.VM, req.Key, req.Size)
	}))
	go func() { _ = http.Serve(ln, mux) }()
	return ln.Addr().String(), nil
}

func (l *lab) handle(f func(r *http.Request) (interface{}, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		want := "Bearer " + l.controlToken
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(want)) != 1 {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "unauthorized"})
			return
		}
		res, err := f(r)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(res)
	}
}

func (l *lab) describeSnapshots() []map[string]interface{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]interface{}
	for ref, st := range l.snaps {
		var disks []map[string]interface{}
		for _, sd := range st.disks {
			cid := ""
			if sd.cbtUUID != "" {
				cid = sd.cbtUUID + "/" + itoa(sd.seq)
			}
			chain := []string{sd.dsPath}
			if vi := l.vms[st.vm]; vi != nil {
				if d := vi.diskByKey(sd.key); d != nil && d.indexOf(sd.rel) >= 0 {
					chain = d.chainPaths(d.indexOf(sd.rel))
				}
			}
			disks = append(disks, map[string]interface{}{
				"key": sd.key, "frozen": sd.frozen, "backing_file": sd.dsPath,
				"capacity_bytes": sd.capacity, "change_id": cid, "chain": chain,
			})
		}
		// st.disks and l.snaps are maps: a stable order (disk keys, snapshot morefs) for callers that compare
		sort.Slice(disks, func(i, j int) bool { return disks[i]["key"].(int32) < disks[j]["key"].(int32) })
		out = append(out, map[string]interface{}{"moid": ref.Value, "vm": st.vm.Value, "disks": disks})
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["moid"].(string) < out[j]["moid"].(string) })
	return out
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
