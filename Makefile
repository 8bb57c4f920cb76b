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

.PHONY: setup apt venv models fixtures build run test bench-lfw clean-cache

setup: apt venv models fixtures build

apt:
	@scripts/install_apt.sh

venv: $(VENV)/.installed

$(VENV)/.installed: scripts/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
	@touch $@

models: venv
	@$(VENV)/bin/python scripts/prepare_models.py --out $(CACHE)/models --download-cache $(CACHE)/downloads

fixtures:
	@$(PYTHON) scripts/fetch_fixtures.py --out $(CACHE)/fixtures --download-cache $(CACHE)/downloads

build:
	@command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first"; exit 1; }
	cargo build $(CARGO_FLAGS)

# The main job: the face engine on the LFW verification protocol (embedded default config).
run: setup
	target/release/facestream eval lfw --images $(LFW)/images --pairs $(LFW)/pairs.txt \
		--report $(CACHE)/eval-lfw.json --roc $(CACHE)/eval-lfw-roc.svg

test: setup
	cargo test $(CARGO_FLAGS)

# facestream and OpenCV's reference pipeline on the same LFW copy, one after the other.
bench-lfw: setup
	scripts/bench_lfw.sh $(LFW)

clean-cache:
	rm -rf $(CACHE)
