module github.com/pulsegate/pulsegate

go 1.26

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/creack/pty v1.1.24
	go.bug.st/serial v1.8.0
	go.etcd.io/bbolt v1.5.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.45.0
	pgregory.net/rapid v1.3.0
)
