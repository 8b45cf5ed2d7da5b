// A runtime's side of CNI, through libcni itself (Debian's
// golang-github-appc-cni-dev, spec 1.0.0): run a configuration list's
// plugins for one container as Podman and containerd do, with libcni's
// version negotiation, result conversion, prevResult chaining and cache.
//
//	libcni_driver add|check|del CONFLIST NETNS CONTAINERID [CAPABILITIES_JSON]
//
// CNI_PATH lists the plugin directories, CNI_CACHE_DIR where libcni keeps
// the results DEL and CHECK are given. The result of add is printed on
// stdout; an error goes to stderr with exit status 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
)

func main() {
	if len(os.Args) < 5 {
		fmt.Fprintln(os.Stderr, "usage: libcni_driver add|check|del CONFLIST NETNS CONTAINERID [CAPABILITIES_JSON]")
		os.Exit(2)
	}
	action, file, netns, id := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	list, err := libcni.ConfListFromFile(file)
	if err != nil {
		fail(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), os.Getenv("CNI_CACHE_DIR"), nil)
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: "eth0"}
	if len(os.Args) > 5 {
		if err := json.Unmarshal([]byte(os.Args[5]), &rt.CapabilityArgs); err != nil {
			fail(err)
		}
	}
	ctx := context.Background()
	switch action {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		if err := result.Print(); err != nil {
			fail(err)
		}
	case "check":
		err = cni.CheckNetworkList(ctx, list, rt)
	case "del":
		err = cni.DelNetworkList(ctx, list, rt)
	default:
		err = fmt.Errorf("unknown action %q", action)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
