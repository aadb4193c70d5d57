# Every target installs what it needs on first use (scripts/with-torch: torch 2.11.0 in a per-user
# cache unless LIBTORCH or LIBTORCH_USE_PYTORCH is set), then builds in release mode.
WITH_TORCH := scripts/with-torch
CARGO := $(WITH_TORCH) cargo

# Common choices for the experiments: `make reproduce-table6 DATASET=fashion-mnist PRESET=quick`.
DATASET ?= cifar10
PRESET ?= full
DATA_DIR ?= data
DEVICE ?= auto
# Workers sharing a sweep (scripts/workers): each run trained once, GPU k mod #GPUs for worker k.
JOBS ?= 1
# Data-parallel training (torchrun): NPROC processes per node train each run together, rank r on
# GPU r (NCCL) or on its share of the CPU (Gloo); several nodes with NNODES, NODE_RANK,
# MASTER_ADDR, MASTER_PORT (the same on every node). Up to MAX_RESTARTS restarts from the last
# checkpoint when a worker dies. Tables 6, 2 and 3, and Tables 7 and 8 (one run on all of them).
NPROC ?= 1
NNODES ?= 1
NODE_RANK ?= 0
MASTER_ADDR ?= 127.0.0.1
MASTER_PORT ?= 29500
MAX_RESTARTS ?= 3
ifneq ($(filter-out 1,$(NPROC) $(NNODES)),)
ifneq ($(JOBS),1)
$(error JOBS=$(JOBS) shares a sweep's runs between processes, NPROC=$(NPROC)/NNODES=$(NNODES) trains each run on all of them: choose one)
endif
TORCHRUN := $(WITH_TORCH) torchrun --no-python --nproc-per-node $(NPROC) --nnodes $(NNODES) --node-rank $(NODE_RANK) \
	--master-addr $(MASTER_ADDR) --master-port $(MASTER_PORT) --max-restarts $(MAX_RESTARTS)
SWEEP := $(TORCHRUN)
else
SWEEP := scripts/workers $(JOBS)
endif
ifeq ($(filter $(PRESET),full quick),)
$(error PRESET=$(PRESET): expected full or quick)
endif
QUICK_FLAG := $(if $(filter quick,$(PRESET)),--quick,)
EXPERIMENT_ARGS := --dataset $(DATASET) --data-dir $(DATA_DIR) --device $(DEVICE)
# ImageNet: DATA_DIR is the ImageNet root (train/, val/) or a folder holding imagenet/.
IMAGENET_ARGS := --data-dir $(DATA_DIR) --device $(DEVICE) $(QUICK_FLAG)

# The release (results/, committed): Table 6's nets on Fashion-MNIST with the paper's full CIFAR
# schedule (experiments/table6_cifar10.toml), bf16 autocast, 2 workers of one thread each, trained
# in RELEASE_ONLY's order as compute allows: the 20s (released), the 32s, the 56s (Fig. 1's
# plain-56), the 44s, ResNet-110 (its warm-up), seeds 1 and 2 of the 20s (their spread), plain-110.
# `make release-runs` restores the released runs as finished (not trained again), resumes the
# unfinished ones from results/table6/in-progress/ (when there are any) and, once the queue is
# done, publishes the runs; `make release-snapshot` (after the runs are stopped) keeps the unfinished
# runs' newest checkpoints there, publishes every run finished so far and rewrites what the release
# shows (`make results`: summary, findings, figures, the README's status table): commit all of it.
RELEASE_RUNS := runs/release
RELEASE_DEPTHS := plain20,resnet20,plain32,resnet32,plain56,resnet56,plain44,resnet44,resnet110/seed0
RELEASE_ONLY := $(RELEASE_DEPTHS),plain20/seed1,resnet20/seed1,plain20/seed2,resnet20/seed2,plain110
RELEASE_TRAIN := target/release/cifar_depth_sweep --config experiments/table6_cifar10.toml --dataset fashion-mnist \
	--only $(RELEASE_ONLY) --precision bf16 --threads 1 --out $(RELEASE_RUNS) --plots $(RELEASE_RUNS)/plots --no-download
RELEASE_PUBLISH := target/release/release publish --runs $(RELEASE_RUNS) --command "scripts/workers 2 $(RELEASE_TRAIN)"

.PHONY: all build test test-slow fuzz bench doctor crosscheck release-runs release-snapshot release-detect-scenes reproduce-detect-scenes reproduce-table7 reproduce-table8 results reproduce-table1 reproduce-table2 reproduce-table3 reproduce-table6 reproduce-fig7 report plots fmt lint clean-runs help

all: build

help:
	@echo "make reproduce-table6   Table 6, Figures 1 and 6: the CIFAR depth sweep (runs/table6/, plots/)"
	@echo "                        DATASET=cifar10|cifar100|fashion-mnist PRESET=full|quick DATA_DIR=data DEVICE=auto|cpu|cuda"
	@echo "                        JOBS=N: N workers share the sweep (each run once; worker k on GPU k mod #GPUs):"
	@echo "                        the choice for several GPUs here (a captured GPU per run, BN over the whole batch)"
	@echo "                        NPROC=N: data-parallel, each run on N processes (torchrun; NNODES, NODE_RANK,"
	@echo "                        MASTER_ADDR, MASTER_PORT for several nodes, MAX_RESTARTS=3; trusted networks only)"
	@echo "make reproduce-fig7     Figure 7: layer-response stds of the Table 6 nets (trains missing ones; runs/fig7/)"
	@echo "                        DATASET=... PRESET=... DATA_DIR=... DEVICE=... as for reproduce-table6"
	@echo "make report             REPORT.md: every result under runs/ beside the paper, with the figures"
	@echo "make reproduce-table2   Table 2, Figure 4: plain-18/34 vs ResNet-18/34 on ImageNet (runs/table2/, plots/)"
	@echo "                        DATA_DIR=<ImageNet root or folder holding imagenet/> PRESET=full|quick DEVICE=... JOBS=N"
	@echo "                        NPROC=8: the paper's 8 GPUs of 32 images each (NNODES=... as for reproduce-table6)"
	@echo "make reproduce-table3   Tables 3 and 4: ResNet-34 A/B/C, ResNet-50/101/152 on ImageNet (runs/table3/)"
	@echo "                        DATA_DIR=... PRESET=... DEVICE=... JOBS=N or NPROC=N as for reproduce-table2"
	@echo "make reproduce-table7   Table 7: Faster R-CNN C4, ResNet-101, VOC 07+12 -> VOC07 test (runs/table7_voc/)"
	@echo "                        DATA_DIR=<VOCdevkit> WEIGHTS=<backbone safetensors; made from torchvision's if missing>"
	@echo "                        NPROC=8: data-parallel, 2 images a GPU (experiments/table7_voc_16.toml; NNODES=...)"
	@echo "make reproduce-table8   Table 8: the same on COCO train2017 -> val2017 (runs/table8_coco/)"
	@echo "                        DATA_DIR=<folder with annotations/, train2017/, val2017/> WEIGHTS=..."
	@echo "                        NPROC=8: data-parallel (experiments/table8_coco_16.toml), as for reproduce-table7"
	@echo "make reproduce-detect-scenes  Tables 7-8 at small scale: Faster R-CNN C4 on Fashion-MNIST scenes, the"
	@echo "                        released plain-20/ResNet-20 as backbones, pre-trained and from scratch"
	@echo "                        (runs/detect_scenes/summary.md); JOBS=2 shares the runs between 2 workers"
	@echo "make reproduce-table1   Table 1: parameters and multiply-adds beside the paper's (runs/table1/)"
	@echo "make plots              re-render every figure and summary from runs/ (no training)"
	@echo "make results            results/ (the release) checked against its MANIFEST; its summary, figures and"
	@echo "                        the README's status table written from it"
	@echo "make release-runs       train the release's runs to the end (resuming from results/), publish them"
	@echo "make release-detect-scenes  train the small-scale detection runs, release them (results/detect_scenes/)"
	@echo "make release-snapshot   publish the release runs finished so far, keep the unfinished ones' newest"
	@echo "                        checkpoints in results/ (to commit)"
	@echo "make crosscheck         our training against plain PyTorch's, same recipe, seeds, both inits (runs/crosscheck/)"
	@echo "                        PRESET=full|quick (quick: 2 seeds, 200 iterations) DATA_DIR=... DEVICE=..."
	@echo "make test               the test suite (CPU only)"
	@echo "make test-slow          the slow tests: Faster R-CNN C4 on ResNet-101 at the paper's scale vs torchvision"
	@echo "make fuzz               the parsers of outside data against 5000 corrupted inputs each (FUZZ_CASES=..., FUZZ_SEED=...)"
	@echo "make bench              train step, training loop and ImageNet loader vs plain PyTorch (runs/bench/)"
	@echo "make doctor             torch version, CUDA/cuDNN, CPU bf16, threads; then the self-test (PASS/FAIL per check)"
	@echo "make build              build every binary (target/release/)"

build:
	$(CARGO) build --release

test:
	$(CARGO) test --release

# The tests too slow for `make test`: Faster R-CNN C4 on ResNet-101 at the paper's scale against
# torchvision, stage by stage in float64 (about 2 minutes here).
test-slow:
	$(CARGO) test --release --test detect -- --ignored

# The parsers of outside data against many more corrupted inputs than `make test` tries.
fuzz:
	FUZZ_CASES=$${FUZZ_CASES:-5000} $(CARGO) test --release --test fuzz -- --nocapture

bench: build
	$(WITH_TORCH) target/release/bench_train_step
	$(WITH_TORCH) target/release/bench_train_loop
	$(WITH_TORCH) target/release/bench_loader
	$(WITH_TORCH) target/release/bench_data_parallel

doctor: build
	target/release/doctor --selftest

crosscheck: build
	$(WITH_TORCH) target/release/crosscheck --data-dir $(DATA_DIR) --device $(DEVICE) $(QUICK_FLAG)

reproduce-table6: build
	$(SWEEP) target/release/cifar_depth_sweep $(EXPERIMENT_ARGS) $(QUICK_FLAG)

reproduce-fig7: build
	target/release/cifar_layer_responses $(EXPERIMENT_ARGS) $(QUICK_FLAG)

report: build
	target/release/plot --runs runs --plots plots
	target/release/report --runs runs --plots plots --out REPORT.md

reproduce-table2: build
	$(SWEEP) target/release/imagenet_plain_vs_resnet $(IMAGENET_ARGS)

reproduce-table3: build
	$(SWEEP) target/release/imagenet_table3 $(IMAGENET_ARGS)

release-runs: build
	target/release/release restore --runs $(RELEASE_RUNS)
	scripts/workers 2 $(RELEASE_TRAIN)
	$(RELEASE_PUBLISH)
	$(MAKE) results

# Tables 7-8 at small scale: Faster R-CNN C4 on scenes of Fashion-MNIST items, the backbones the
# released plain-20 and ResNet-20 (pre-trained and from scratch, 3 seeds: experiments/detect_scenes.toml).
# `make release-detect-scenes` trains them as two workers of one thread (about an hour or two here),
# releases them under results/detect_scenes/ with the manifest and writes the status table.
DETECT_RELEASE := scripts/workers 2 target/release/detect_scenes --threads 1 --out $(RELEASE_RUNS)/detect_scenes --no-download
reproduce-detect-scenes: build
	scripts/workers $(JOBS) target/release/detect_scenes --data-dir $(DATA_DIR) --device $(DEVICE)

# Tables 7-8 at full size: Faster R-CNN C4 on ResNet-101 from torchvision's ImageNet weights
# (WEIGHTS, exported once by python/resnet_repro_torch.py, which downloads them), on PASCAL VOC
# (DATA_DIR=<VOCdevkit>) or COCO (DATA_DIR=<folder with annotations/, train2017/, val2017/>).
WEIGHTS ?= $(DATA_DIR)/torchvision-resnet101.safetensors
FASTER_RCNN := $(TORCHRUN) target/release/faster_rcnn --data-dir $(DATA_DIR) --weights $(WEIGHTS) --device $(DEVICE)
# Data-parallel (NPROC or NNODES above 1): torchvision's reference as it is, 16 images an update.
DETECT_BATCH := $(if $(TORCHRUN),_16,)
reproduce-table7: build $(WEIGHTS)
	$(FASTER_RCNN) --config experiments/table7_voc$(DETECT_BATCH).toml

reproduce-table8: build $(WEIGHTS)
	$(FASTER_RCNN) --config experiments/table8_coco$(DETECT_BATCH).toml

$(WEIGHTS):
	$(WITH_TORCH) python3 python/resnet_repro_torch.py torchvision-weights resnet101 $@

release-detect-scenes: build
	$(DETECT_RELEASE)
	target/release/release --table detect_scenes publish --runs $(RELEASE_RUNS)/detect_scenes --command "$(DETECT_RELEASE)"
	target/release/release status

release-snapshot: build
	target/release/release snapshot --runs $(RELEASE_RUNS)
	$(RELEASE_PUBLISH)
	target/release/release status

# Everything results/ shows, from its files alone: summary, figures, Table 1, the README's status table.
results: build
	target/release/release check
	target/release/release status

plots: build
	target/release/plot --runs runs --plots plots

reproduce-table1: build
	target/release/table1 --out runs/table1

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

clean-runs:
	rm -rf runs plots REPORT.md
