// vcsim-cbt: govmomi's vCenter simulator (VPX model) with Changed Block
// Tracking, for the migratekit.migration test lab.
//
// Usage: vcsim-cbt -config CONFIG.json
//
// Secrets never come from argv: the vCenter password is read from the
// environment variable VCSIM_CBT_PASSWORD and the control API token from
// VCSIM_CBT_CONTROL_TOKEN (both removed from the environment once read).
//
// When ready, the program writes the JSON file named by config
// "ready_file" (atomically) describing the endpoints, datastores, VMs and
// disks. It runs until SIGTERM/SIGINT (or until the process "watch_pid"
// is gone, when set).
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

type config struct {
	Listen        string `json:"listen"`         // SOAP (TLS) listen address, e.g. 127.0.0.1:0
	ControlListen string `json:"control_listen"` // control HTTP listen address, e.g. 127.0.0.1:0
	DatastoreRoot string `json:"datastore_root"` // parent directory of the datastore directories
	VMs           int    `json:"vms"`
	Disks         int    `json:"disks"`
	DiskSize      int64  `json:"disk_size"`
	BlockSize     int64  `json:"block_size"` // CBT granularity in bytes
	PageSize      int    `json:"page_size"`  // max changedArea entries per QueryChangedDiskAreas answer
	ReadyFile     string `json:"ready_file"`
	WatchPid      int    `json:"watch_pid"`
	Username      string `json:"username"`
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("vcsim-cbt ")
	cfgPath := flag.String("config", "", "path of the JSON configuration file")
	flag.Parse()
	if *cfgPath == "" {
		log.Fatal("-config is required")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		log.Fatalf("config: %s", err)
	}

	password := os.Getenv("VCSIM_CBT_PASSWORD")
	controlToken := os.Getenv("VCSIM_CBT_CONTROL_TOKEN")
	_ = os.Unsetenv("VCSIM_CBT_PASSWORD")
	_ = os.Unsetenv("VCSIM_CBT_CONTROL_TOKEN")
	if password == "" {
		log.Fatal("VCSIM_CBT_PASSWORD is not set")
	}
	if controlToken == "" {
		log.Fatal("VCSIM_CBT_CONTROL_TOKEN is not set")
	}

	if err := os.MkdirAll(cfg.DatastoreRoot, 0700); err != nil {
		log.Fatal(err)
	}
	// The model creates each datastore with ioutil.TempDir("", ...).
	_ = os.Setenv("TMPDIR", cfg.DatastoreRoot)

	model := simulator.VPX()
	model.Machine = 0 // our own VMs are created below
	if err := model.Create(); err != nil {
		log.Fatalf("model: %s", err)
	}

	l := newLab(cfg, controlToken)
	simulator.Map.AddHandler(l)

	caFile := filepath.Join(filepath.Dir(cfg.ReadyFile), "vcenter-ca.pem")
	cert, err := labCertificate(caFile)
	if err != nil {
		log.Fatalf("certificate: %s", err)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	model.Service.Listen = &url.URL{Host: cfg.Listen, User: url.UserPassword(cfg.Username, password)}
	server := model.Service.NewServer()
	// Answer QueryChangedDiskAreas ourselves; pass everything else on.
	server.Config.Handler = l.wrapSOAP(server.Config.Handler)

	ctx := context.Background()
	if err := l.createVMs(ctx, server.URL); err != nil {
		log.Fatalf("creating VMs: %s", err)
	}

	controlAddr, err := l.startControl(cfg.ControlListen)
	if err != nil {
		log.Fatalf("control: %s", err)
	}

	host, portStr, _ := net.SplitHostPort(server.URL.Host)
	port, _ := strconv.Atoi(portStr)
	u := *server.URL
	u.User = nil
	ready := map[string]interface{}{
		"pid":         os.Getpid(),
		"url":         u.String(),
		"hostname":    host,
		"port":        port,
		"control_url": "http://" + controlAddr,
		"ca_file":     caFile,
		"datastores":  l.datastoreDirs(),
		"vms":         l.describeVMs(),
	}
	if err := writeJSONAtomic(cfg.ReadyFile, ready); err != nil {
		log.Fatalf("ready file: %s", err)
	}
	log.Printf("ready: %s control %s", u.String(), controlAddr)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case s := <-sig:
			log.Printf("%s: exiting", s)
			server.Close()
			os.Exit(0)
		case <-tick.C:
			if cfg.WatchPid > 0 && syscall.Kill(cfg.WatchPid, 0) == syscall.ESRCH {
				log.Printf("watched process %d is gone: exiting", cfg.WatchPid)
				os.Exit(0)
			}
		}
	}
}

func loadConfig(path string) (*config, error) {
	b, err := ioutil.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg := &config{
		Listen:        "127.0.0.1:0",
		ControlListen: "127.0.0.1:0",
		VMs:           1,
		Disks:         1,
		DiskSize:      64 << 20,
		BlockSize:     64 << 10,
		PageSize:      64,
		Username:      "migratekit-lab",
	}
	if err := json.Unmarshal(b, cfg); err != nil {
		return nil, err
	}
	switch {
	case cfg.DatastoreRoot == "":
		return nil, fmt.Errorf("datastore_root is required")
	case cfg.ReadyFile == "":
		return nil, fmt.Errorf("ready_file is required")
	case cfg.VMs < 1:
		return nil, fmt.Errorf("vms must be >= 1")
	case cfg.Disks < 1 || cfg.Disks > 15:
		return nil, fmt.Errorf("disks must be 1..15")
	case cfg.DiskSize <= 0 || cfg.DiskSize%1024 != 0:
		return nil, fmt.Errorf("disk_size must be a positive multiple of 1024")
	case cfg.BlockSize <= 0 || cfg.BlockSize&(cfg.BlockSize-1) != 0:
		return nil, fmt.Errorf("block_size must be a power of two")
	case cfg.PageSize < 1:
		return nil, fmt.Errorf("page_size must be >= 1")
	}
	cfg.DatastoreRoot, _ = filepath.Abs(cfg.DatastoreRoot)
	return cfg, nil
}

func writeJSONAtomic(path string, v interface{}) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := ioutil.WriteFile(tmp, b, 0600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
