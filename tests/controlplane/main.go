// Command controlplane is a test control plane for kmm-dtk: a real kube-apiserver and a real
// etcd, built from the Kubernetes and etcd Go modules because no package of either exists on the
// registries this project reaches.
//
// It is a multi-call binary so that it can stand in for envtest's KUBEBUILDER_ASSETS layout:
//
//	controlplane etcd --data-dir DIR --listen-client-urls URL [--unsafe-no-fsync]
//	controlplane kube-apiserver <kube-apiserver flags>
//
// or invoked through symlinks named "etcd" and "kube-apiserver". etcd and kube-apiserver run as
// two processes of this one binary so a test can restart kube-apiserver while etcd keeps its data.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name != "etcd" && name != "kube-apiserver" {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, "usage: controlplane etcd|kube-apiserver [flags]")
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	switch name {
	case "etcd":
		os.Exit(runEtcd(args))
	case "kube-apiserver":
		os.Args = append([]string{"kube-apiserver"}, args...)
		os.Exit(cli.Run(app.NewAPIServerCommand()))
	default:
		fmt.Fprintf(os.Stderr, "controlplane: unknown command %q (want etcd or kube-apiserver)\n", name)
		os.Exit(2)
	}
}

// runEtcd accepts the subset of etcd's own flags that envtest passes, so callers need not know
// whether they run this binary or a real etcd.
func runEtcd(args []string) int {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "directory for etcd data (required)")
	clientURLs := fs.String("listen-client-urls", "http://127.0.0.1:2379", "client URLs to listen on")
	advertise := fs.String("advertise-client-urls", "", "client URLs to advertise (default: listen URLs)")
	peerURLs := fs.String("listen-peer-urls", "", "peer URLs (default: a free loopback port)")
	noFsync := fs.Bool("unsafe-no-fsync", false, "disable fsync (tests only)")
	quotaBytes := fs.Int64("quota-backend-bytes", 0, "backend quota in bytes (0: etcd default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "etcd: --data-dir is required")
		return 2
	}
	cfg := embed.NewConfig()
	cfg.Name = "controlplane"
	cfg.Dir = *dataDir
	cfg.UnsafeNoFsync = *noFsync
	cfg.LogLevel = "error"
	cfg.QuotaBackendBytes = *quotaBytes
	var err error
	if cfg.ListenClientUrls, err = parseURLs(*clientURLs); err != nil {
		fmt.Fprintf(os.Stderr, "etcd: --listen-client-urls: %v\n", err)
		return 2
	}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	if *advertise != "" {
		if cfg.AdvertiseClientUrls, err = parseURLs(*advertise); err != nil {
			fmt.Fprintf(os.Stderr, "etcd: --advertise-client-urls: %v\n", err)
			return 2
		}
	}
	peer := *peerURLs
	if peer == "" {
		peer = "http://127.0.0.1:0"
	}
	if cfg.ListenPeerUrls, err = parseURLs(peer); err != nil {
		fmt.Fprintf(os.Stderr, "etcd: --listen-peer-urls: %v\n", err)
		return 2
	}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: start: %v\n", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintln(os.Stderr, "etcd: ready to serve client requests")
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		fmt.Fprintln(os.Stderr, "etcd: not ready after 60s")
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcd: %v, stopping\n", s)
		return 0
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	}
}

func parseURLs(s string) ([]url.URL, error) {
	var out []url.URL
	for _, part := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		out = append(out, *u)
	}
	return out, nil
}
