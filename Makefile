# Every target installs what it needs on first use (scripts/with-torch: torch 2.11.0 in a per-user
# cache unless LIBTORCH or LIBTORCH_USE_PYTORCH is set), then builds in release mode.
WITH_TORCH := scripts/with-torch
CARGO := $(WITH_TORCH) cargo

.PHONY: all build test bench doctor reproduce-table1 fmt lint clean-runs help

all: build

help:
	@echo "make reproduce-table1   Table 1: parameters and multiply-adds beside the paper's (runs/table1/)"
	@echo "make test               the test suite (CPU only)"
	@echo "make bench              train-step throughput vs plain PyTorch (runs/bench/train_step.csv)"
	@echo "make doctor             torch version, CUDA/cuDNN, threads, where libtorch was found"
	@echo "make build              build every binary (target/release/)"

build:
	$(CARGO) build --release

test:
	$(CARGO) test --release

bench: build
	$(WITH_TORCH) target/release/bench_train_step

doctor: build
	target/release/doctor

reproduce-table1: build
	target/release/table1 --out runs/table1

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

clean-runs:
	rm -rf runs plots
