package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io/ioutil"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

const envelopeStart = `<?xml version="1.0" encoding="UTF-8"?>` +
	`<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" ` +
	`xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ` +
	`xmlns:xsd="http://www.w3.org/2001/XMLSchema" ` +
	`xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>`
const envelopeEnd = `</soapenv:Body></soapenv:Envelope>`

// wrapSOAP answers QueryChangedDiskAreas and passes every other request on.
func (l *lab) wrapSOAP(inner http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/sdk") {
			body, err := ioutil.ReadAll(r.Body)
			_ = r.Body.Close()
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			if bytes.Contains(body, []byte("QueryChangedDiskAreas")) {
				m, err := simulator.UnmarshalBody(types.TypeFunc(), body)
				if err == nil && m.Name == "QueryChangedDiskAreas" {
					l.serveQCDA(w, r, inner, m.Body.(*types.QueryChangedDiskAreas))
					return
				}
			}
			if bytes.Contains(body, []byte("RevertToSnapshot_Task")) {
				m, err := simulator.UnmarshalBody(types.TypeFunc(), body)
				if err == nil && m.Name == "RevertToSnapshot_Task" {
					l.serveRevert(w, r, inner, m.Body.(*types.RevertToSnapshot_Task))
					return
				}
				if err != nil {
					log.Printf("RevertToSnapshot_Task left to the simulator: %v", err)
				}
			}
			if bytes.Contains(body, []byte("ConsolidateVMDisks_Task")) {
				m, err := simulator.UnmarshalBody(types.TypeFunc(), body)
				if err == nil && m.Name == "ConsolidateVMDisks_Task" {
					l.serveConsolidate(w, r, inner, m.Body.(*types.ConsolidateVMDisks_Task))
					return
				}
			}
			r.Body = ioutil.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			if bytes.Contains(body, []byte("CreateSnapshot_Task")) {
				if m, err := simulator.UnmarshalBody(types.TypeFunc(), body); err == nil {
					if req, ok := m.Body.(*types.CreateSnapshot_Task); ok && l.serveIncompatibleSnapshot(w, r, inner, req.This) {
						return
					}
				}
				r.Body = ioutil.NopCloser(bytes.NewReader(body))
			}
			if bytes.Contains(body, []byte("<Fetch")) {
				serveFetch(w, r, inner)
				return
			}
		}
		inner.ServeHTTP(w, r)
	})
}

// serveFetch: the simulator's PropertyCollector.Fetch (what pyvmomi's
// property accessors call, e.g. vm.snapshot) panics on an unset property
// (index out of range) and the connection is dropped; vCenter answers an
// empty FetchResponse (pyvmomi returns None). Nothing has been written to
// the response when the panic happens (the simulator writes after the call).
func serveFetch(w http.ResponseWriter, r *http.Request, inner http.Handler) {
	rec := httptest.NewRecorder()
	panicked := func() (p bool) {
		defer func() {
			if v := recover(); v != nil {
				log.Printf("Fetch of an unset property (simulator panic: %v): answering unset", v)
				p = true
			}
		}()
		inner.ServeHTTP(rec, r)
		return false
	}()
	if panicked {
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(envelopeStart + `<FetchResponse xmlns="urn:vim25"></FetchResponse>` + envelopeEnd))
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// authenticated asks the simulator whether the request's session cookie is
// a logged-in session (CurrentTime needs a session).
func authenticated(r *http.Request, inner http.Handler) bool {
	body := envelopeStart + `<CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime>` + envelopeEnd
	req := httptest.NewRequest(http.MethodPost, r.URL.Path, strings.NewReader(body))
	for _, c := range r.Cookies() {
		req.AddCookie(c)
	}
	req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	rec := httptest.NewRecorder()
	inner.ServeHTTP(rec, req)
	return rec.Code == http.StatusOK
}

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func writeFault(w http.ResponseWriter, e *qcdaError) {
	var detail string
	switch e.fault {
	case "FileFault":
		detail = fmt.Sprintf(`<file>%s</file>`, esc(e.file))
	case "InvalidArgument":
		detail = fmt.Sprintf(`<invalidProperty>%s</invalidProperty>`, esc(e.prop))
	case "ManagedObjectNotFound":
		detail = fmt.Sprintf(`<obj type="%s">%s</obj>`, esc(e.obj.Type), esc(e.obj.Value))
	case "NotAuthenticated":
		detail = `<object type="ServiceInstance">ServiceInstance</object><privilegeId>System.View</privilegeId>`
	}
	body := envelopeStart +
		`<soapenv:Fault><faultcode>ServerFaultCode</faultcode>` +
		fmt.Sprintf(`<faultstring>%s</faultstring>`, esc(e.msg)) +
		fmt.Sprintf(`<detail><%sFault xmlns="urn:vim25" xsi:type="%s">%s</%sFault></detail>`, e.fault, e.fault, detail, e.fault) +
		`</soapenv:Fault>` + envelopeEnd
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write([]byte(body))
}

// writeTaskResponse answers a *_Task method the lab takes over: the task's moref.
func writeTaskResponse(w http.ResponseWriter, method string, task types.ManagedObjectReference) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(envelopeStart + `<` + method + `Response xmlns="urn:vim25"><returnval type="Task">` +
		esc(task.Value) + `</returnval></` + method + `Response>` + envelopeEnd))
}

func (l *lab) serveQCDA(w http.ResponseWriter, r *http.Request, inner http.Handler, req *types.QueryChangedDiskAreas) {
	if !authenticated(r, inner) {
		writeFault(w, &qcdaError{fault: "NotAuthenticated", msg: "The session is not authenticated."})
		return
	}
	all, capacity, err := l.changedAreas(req.This, req.Snapshot, req.DeviceKey, req.ChangeId)
	if err != nil {
		e := err.(*qcdaError)
		log.Printf("QueryChangedDiskAreas(%s, key %d, changeId %q): %s %s", req.This.Value, req.DeviceKey, req.ChangeId, e.fault, e.msg)
		writeFault(w, e)
		return
	}
	if req.StartOffset < 0 || req.StartOffset >= capacity {
		writeFault(w, &qcdaError{fault: "InvalidArgument", msg: fmt.Sprintf("startOffset %d is outside the disk (capacity %d)", req.StartOffset, capacity), prop: "startOffset"})
		return
	}
	length, areas := page(all, capacity, req.StartOffset, l.cfg.PageSize)
	var b strings.Builder
	b.WriteString(envelopeStart)
	b.WriteString(`<QueryChangedDiskAreasResponse xmlns="urn:vim25"><returnval>`)
	fmt.Fprintf(&b, `<startOffset>%d</startOffset><length>%d</length>`, req.StartOffset, length)
	for _, a := range areas {
		fmt.Fprintf(&b, `<changedArea><start>%d</start><length>%d</length></changedArea>`, a.start, a.end-a.start)
	}
	b.WriteString(`</returnval></QueryChangedDiskAreasResponse>`)
	b.WriteString(envelopeEnd)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(b.String()))
}

// serveConsolidate answers ConsolidateVMDisks_Task, which the simulator lacks.
// vSphere API reference, VirtualMachine.ConsolidateVMDisks_Task: "Consolidate
// the virtual disk files of the virtual machine by finding hierarchies of
// redo logs that are not referenced by any snapshot ... and merging them";
// runtime.consolidationNeeded: "Whether any disk of the virtual machine
// requires consolidation. This can happen for example when a snapshot is
// deleted but its associated disk is not committed back to the base disk."
// The task fails (FileLocked) while a merge still cannot be done, for
// example while a reader holds a link open.
func (l *lab) serveConsolidate(w http.ResponseWriter, r *http.Request, inner http.Handler, req *types.ConsolidateVMDisks_Task) {
	if !authenticated(r, inner) {
		writeFault(w, &qcdaError{fault: "NotAuthenticated", msg: "The session is not authenticated."})
		return
	}
	simVM, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine)
	if !ok {
		ref := req.This
		writeFault(w, &qcdaError{fault: "ManagedObjectNotFound", msg: fmt.Sprintf("managed object not found: %s", ref), obj: &ref})
		return
	}
	task := simulator.CreateTask(simVM, "consolidateVMDisks", func(t *simulator.Task) (types.AnyType, types.BaseMethodFault) {
		var fault types.BaseMethodFault
		simulator.Map.WithLock(simVM, func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			vi := l.vms[req.This]
			if vi == nil {
				return
			}
			l.consolidateLocked(vi, &simVM.VirtualMachine)
			if c := simVM.Runtime.ConsolidationNeeded; c != nil && *c {
				fault = &types.FileLocked{FileFault: types.FileFault{File: vi.name}}
			}
		})
		return nil, fault
	})
	writeTaskResponse(w, "ConsolidateVMDisks_Task", task.Run())
}

// serveRevert answers VirtualMachineSnapshot.RevertToSnapshot_Task, whose
// simulator version only moves snapshot.currentSnapshot. vSphere API
// reference: "Change the execution state of the virtual machine to the state
// of this snapshot"; the disks read what the snapshot froze, and later writes
// go to a new delta of the snapshot's link. With CBT the disk's tracking goes
// back with it: its changeId is the snapshot's again (same uuid, the
// snapshot's sequence), so a changeId taken after the snapshot is ahead of
// the disk. The lab keeps one chain per disk: a revert to a snapshot that has
// a later snapshot on the chain is refused (NotSupported).
func (l *lab) serveRevert(w http.ResponseWriter, r *http.Request, inner http.Handler, req *types.RevertToSnapshot_Task) {
	if !authenticated(r, inner) {
		writeFault(w, &qcdaError{fault: "NotAuthenticated", msg: "The session is not authenticated."})
		return
	}
	snap, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachineSnapshot)
	if !ok {
		ref := req.This
		writeFault(w, &qcdaError{fault: "ManagedObjectNotFound", msg: fmt.Sprintf("managed object not found: %s", ref), obj: &ref})
		return
	}
	simVM, ok := simulator.Map.Get(snap.Vm).(*simulator.VirtualMachine)
	if !ok {
		ref := snap.Vm
		writeFault(w, &qcdaError{fault: "ManagedObjectNotFound", msg: fmt.Sprintf("managed object not found: %s", ref), obj: &ref})
		return
	}
	task := simulator.CreateTask(simVM, "revertToSnapshot", func(t *simulator.Task) (types.AnyType, types.BaseMethodFault) {
		var fault types.BaseMethodFault
		simulator.Map.WithLock(simVM, func() {
			l.mu.Lock()
			fault = l.revertLocked(snap.Self, simVM)
			l.mu.Unlock()
			if fault == nil {
				simulator.Map.Update(simVM, []types.PropertyChange{{Name: "snapshot.currentSnapshot", Val: snap.Self}})
			}
		})
		return nil, fault
	})
	writeTaskResponse(w, "RevertToSnapshot_Task", task.Run())
}

// ---------------------------------------------------------------- syscalls

func seekFd(fd int, off int64, whence int) (int64, error) {
	return syscall.Seek(fd, off, whence)
}

func isENXIO(err error) bool  { return err == syscall.ENXIO }
func isEINVAL(err error) bool { return err == syscall.EINVAL }

// ficlone tries a reflink copy (FICLONE); false when unsupported.
func ficlone(dst, src *os.File) bool {
	const FICLONE = 0x40049409
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, dst.Fd(), FICLONE, src.Fd())
	return e == 0
}
