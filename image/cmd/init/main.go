// Command init is the appliance's pid 1, installed as /gokrazy/init on the
// root file system. It is what gokrazy's packer would generate: gokrazy.Boot
// mounts /dev, /proc, /sys, /tmp and /perm (partition 4 of the boot disk),
// then gokrazy supervises (restarts) the network and time helpers and the
// gateway.
//
// The gateway is started through /user/launch, which drops root and puts its
// output on the serial console (gokrazy keeps a service's output in memory
// only).
package main

import (
	"log"
	"os/exec"

	"github.com/gokrazy/gokrazy"
)

// buildTimestamp is shown on gokrazy's status handlers. It is fixed so that
// two builds of one commit give the same root file system; the packer may
// set it with -ldflags -X main.buildTimestamp=....
var buildTimestamp = "pulsegate"

func main() {
	if err := gokrazy.Boot(buildTimestamp); err != nil {
		log.Fatalf("boot: %v", err)
	}
	services := []*gokrazy.Service{
		gokrazy.NewService(exec.Command("/gokrazy/dhcp")),
		gokrazy.NewService(exec.Command("/gokrazy/ntp")),
		gokrazy.NewService(exec.Command("/gokrazy/randomd")),
		// No NewWaitForClockService: the gateway serves its page at once and
		// itself holds presses back until the clock is set.
		gokrazy.NewService(exec.Command("/user/launch",
			"-user", "1000:1000",
			"-dir", "/perm/pulsegate",
			"-cgroup", "/sys/fs/cgroup/pulsegate",
			"-pins", "/sys/fs/bpf/pulsegate",
			"--",
			"/user/pulsegate", "run",
			"--data-dir", "/perm/pulsegate",
			"--listen", ":8080",
			"--sim", "auto",
			"--guard", "enforce",
			"--guard-cgroup", "self",
			"--guard-pin-dir", "/sys/fs/bpf/pulsegate",
		)),
	}
	if err := gokrazy.SuperviseServices(services); err != nil {
		log.Fatalf("supervise: %v", err)
	}
	select {} // pid 1 must never exit
}
