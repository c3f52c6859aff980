# Pulsegate. `make run` starts the appliance on this machine (with a simulated
# board when no hardware is attached); `make test` runs every test.
GO       ?= go
BIN      := bin/pulsegate
DATA_DIR ?= data
ARGS     ?=

.PHONY: run demo build test bench lint fuzz clean

run: build
	./$(BIN) run --data-dir $(DATA_DIR) $(ARGS)

# Three offices on this machine, paired through the real token flow, each
# with a simulated board; Ctrl-C stops them.
demo: build
	./$(BIN) demo --dir demo-data

build:
	$(GO) build -trimpath -o $(BIN) ./gateway/cmd/pulsegate

# The race detector is on: the serial manager, the intake and the fake board
# are concurrent by nature. It needs cgo (gcc).
test:
	$(GO) test -race -count=1 -timeout 15m ./...

# The press-to-ack benchmark is paced at 100 presses/s, so it runs a fixed
# number of presses; every other benchmark runs for the default time.
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 -timeout 20m ./drivers/... ./gateway/intake/ ./gateway/store/ ./gateway/accounts/ ./gateway/guard/ ./sync/...
	$(GO) test -run='^$$' -bench=PressToAck -benchtime=2000x -count=1 -timeout 5m ./gateway/
	$(GO) test -run='^$$' -bench=ApplyUpdates -benchtime=5s -count=1 -timeout 5m ./cluster/
	$(GO) test -run='^$$' -bench=PressVisibleEverywhere -benchtime=100x -count=1 -timeout 5m ./cluster/
	$(GO) test -run='^$$' -bench=IdleOffice -benchtime=1x -count=1 -timeout 5m ./cluster/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) generate ./sync/wire/ && git diff --exit-code -- sync/wire || { echo "generated code is stale: run go generate ./... and commit"; exit 1; }
	@if command -v clang >/dev/null; then $(GO) generate ./gateway/guard/ && git diff --exit-code -- gateway/guard || { echo "generated eBPF objects are stale: run go generate ./gateway/guard/ and commit"; exit 1; }; else echo "clang not installed: the eBPF objects' freshness is checked by TestGeneratedUpToDate in CI"; fi

# A short run of every fuzz target (go test runs their seed corpora always).
fuzz:
	$(GO) test ./drivers -run='^$$' -fuzz=FuzzDecode -fuzztime=30s
	$(GO) test ./drivers -run='^$$' -fuzz=FuzzParseBody -fuzztime=30s
	$(GO) test ./gateway/store -run='^$$' -fuzz=FuzzDecodeBoard -fuzztime=30s
	$(GO) test ./cluster -run='^$$' -fuzz=FuzzRestore -fuzztime=30s
	$(GO) test ./cluster -run='^$$' -fuzz=FuzzParseToken -fuzztime=30s
	$(GO) test ./sync/wire -run='^$$' -fuzz=FuzzDecode -fuzztime=30s
	$(GO) test ./gateway -run='^$$' -fuzz=FuzzLoadConfig -fuzztime=30s
	$(GO) test ./sync/index -run='^$$' -fuzz=FuzzParseEnrolToken -fuzztime=30s
	$(GO) test ./sync/index -run='^$$' -fuzz=FuzzParseHQKey -fuzztime=30s
	$(GO) test ./sync/index -run='^$$' -fuzz=FuzzBatchesHandler -fuzztime=30s
	$(GO) test ./sync/index -run='^$$' -fuzz=FuzzRenderHQ -fuzztime=30s
	$(GO) test ./sync/index -run='^$$' -fuzz=FuzzPeriodBounds -fuzztime=30s
	$(GO) test ./sync/anon -run='^$$' -fuzz=FuzzParsePeriod -fuzztime=30s
	$(GO) test ./sync/anon -run='^$$' -fuzz=FuzzParseEpsilon -fuzztime=30s
	$(GO) test ./sync/regional -run='^$$' -fuzz=FuzzUnmarshalState -fuzztime=30s
	$(GO) test ./gateway/accounts -run='^$$' -fuzz=FuzzNormalizeEmail -fuzztime=30s
	$(GO) test ./gateway/accounts -run='^$$' -fuzz=FuzzParsePHC -fuzztime=30s
	$(GO) test ./gateway/webtls -run='^$$' -fuzz=FuzzPlainHandler -fuzztime=30s
	$(GO) test ./gateway/qr -run='^$$' -fuzz=FuzzSVG -fuzztime=30s
	$(GO) test ./gateway/web -run='^$$' -fuzz=FuzzUIRequests -fuzztime=30s

# The Raspberry Pi appliance image (Pi 3, 4, 5, Zero 2 W): bin/image/
# pulsegate-rpi-arm64.img.zst and its .sha256. No root needed; needs mtools,
# squashfs-tools and e2fsprogs. See image/README.md.
.PHONY: image
image:
	$(GO) run ./image/cmd/mkimage -out bin/image

clean:
	rm -rf bin
