# The README's two commands are `make demo` and `make test`. Both set the
# machine up first (idempotent: a stamp file skips work already done).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.engram-installed
SYSTEM_STAMP := $(VENV)/.engram-system
# Debian packages: offscreen OpenGL for MuJoCo (EGL/OSMesa via Mesa), libusb for
# open3d, PortAudio for sounddevice, ffmpeg for whisper/video files, espeak-ng
# and sox for synthesised speech in tests, chromium for the web page's tests.
APT_PACKAGES := libusb-1.0-0 libegl1 libgl1 libgl1-mesa-dri libosmesa6 libportaudio2 \
	ffmpeg espeak-ng sox libgomp1 chromium chromium-driver
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: demo test setup system lint format bench clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

demo: setup  ## set up, then run the main job (a MuJoCo episode through the full pipeline)
	$(VENV)/bin/engram demo

test: setup  ## set up, then run the whole test suite
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

setup: $(SYSTEM_STAMP) $(STAMP)  ## create .venv and install everything (system + Python)

system: $(SYSTEM_STAMP)

$(SYSTEM_STAMP):
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages: $$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null \
	      || { echo "apt-get install failed for: $$missing" >&2; exit 1; }; \
	  else \
	    echo "warning: missing system packages (run as root or install them): $$missing" >&2; \
	  fi; \
	fi
	@mkdir -p $(VENV) && touch $@

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel
	$(PIP) install -q -e '.[full,dev]'
	@touch $@

lint: setup  ## ruff check + format check + import-linter contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup  ## every benchmark in quick mode
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
