# oneframe: the one entry point. `make demo` and `make check` do all their own set-up.
SHELL      := /bin/bash
JOBS       ?= $(shell nproc)
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
CMAKE_FLAGS ?=

.PHONY: all deps build asan fuzz kmod check unit demo bench lab package clean help

all: build

help:
	@echo "make deps     install every Debian package a fresh Debian 12 machine lacks (root)"
	@echo "make          build daemon, tools, BPF programs (into $(BUILD)/)"
	@echo "make check    deps + every build + every test: unit (ASan+UBSan), BPF, lab, kernel-module VM, fuzz smoke"
	@echo "make demo     deps + build + a failover pair and a viewer in network namespaces, a fault, the numbers"
	@echo "make bench    streams per core, CPU per Gb/s, jitter and failover figures beside the baselines"
	@echo "make lab      bring the lab network up (tools/lab up); 'tools/lab down' removes it"
	@echo "make package  build .deb packages into $(BUILD)/pkg"

deps:
	@tools/install-deps

$(BUILD)/build.ninja $(BUILD)/Makefile:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: $(BUILD)/Makefile
	cmake --build $(BUILD) -j$(JOBS)

asan:
	@[ -f $(ASAN_BUILD)/Makefile ] || cmake -S . -B $(ASAN_BUILD) -DOF_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j$(JOBS) --target oneframe-unit

fuzz:
	@[ -f $(FUZZ_BUILD)/Makefile ] || CC=clang-14 CXX=clang++-14 cmake -S . -B $(FUZZ_BUILD) -DOF_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)
	cmake --build $(FUZZ_BUILD) -j$(JOBS)

kmod:
	$(MAKE) -C kmod

check: deps
	$(MAKE) build asan fuzz
	tests/check --build $(BUILD) --asan-build $(ASAN_BUILD) --fuzz-build $(FUZZ_BUILD)

unit: asan
	$(ASAN_BUILD)/tests/oneframe-unit

demo: deps
	$(MAKE) build
	tools/demo --build $(BUILD)

bench: deps
	$(MAKE) build
	tools/bench --build $(BUILD)

lab: build
	tools/lab up

package: build
	tools/package --build $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
	-$(MAKE) -C kmod clean
