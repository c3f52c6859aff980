package image

// The kernel and firmware are Go modules holding only files. Importing their
// (empty) packages keeps them, at the versions the packer copies from, in
// go.mod and go.sum.
import (
	_ "github.com/gokrazy/firmware"
	_ "github.com/gokrazy/kernel.rpi"
)
