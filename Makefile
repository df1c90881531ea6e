# Every target installs what it needs into .venv on first use: `install` the runtime only (torch and
# install_requires), `demo` the runtime and ViSQOL, `test`, `lint`, `bench` and `eval` the test extras and Meta's
# reference package as well.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install test lint demo bench eval clean

$(PYTHON):
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(RUNTIME_STAMP): setup.py | $(PYTHON)
# torch first and pinned: an unpinned torch pulled in by a dependency would fetch a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .
	touch $@

# The demo's ViSQOL (visqol-python; its libsvm dependency compiles with a C compiler): without one the demo still
# runs and says how to get it.
$(DEMO_STAMP): $(RUNTIME_STAMP) setup.py
	$(PIP) install -q -e ".[demo]" || echo "ViSQOL not installed (visqol-python needs a C compiler): the demo reports SI-SNR"
	touch $@

$(TEST_STAMP): $(RUNTIME_STAMP) setup.py
	$(PIP) install -q -e ".[test]"
# Meta's reference (test-time only, CC-BY-NC 0.1.1 release, never shipped): no deps, it would pull torchaudio.
# Only the test stamp installs it: `make demo` and `make install` never put it in a user's environment.
	$(PIP) install -q --no-deps encodec==0.1.1
	touch $@

install: $(RUNTIME_STAMP)

test: $(TEST_STAMP)
	$(PYTHON) -m pytest -q tests

lint: $(TEST_STAMP)
	$(PYTHON) -m ruff check src tests conversion benchmarks
	$(PYTHON) -m ruff format --check src tests conversion benchmarks

# MODEL= a folder or Hub id; without one: facebook/encodec_24khz where it loads, else the bundled model.
demo: $(DEMO_STAMP)
	$(PYTHON) -m encodec_hf.demo --output demo_out/decoded.wav $(if $(MODEL),--model $(MODEL))

bench: $(TEST_STAMP)
	$(PYTHON) benchmarks/bench_codec.py

# Quality per bitrate against Opus on ../shared/audio's clips (skipped when absent). MODEL= a folder or Hub id;
# without one, a random-weight 24 kHz model is saved to eval_out/random_24khz (meaningless quality, a dry run).
EVAL_AUDIO ?= ../shared/audio
CONTENT ?= music
eval: $(TEST_STAMP)
	$(PYTHON) benchmarks/run_eval.py --audio $(EVAL_AUDIO) --content $(CONTENT) --report eval_out $(if $(MODEL),--model $(MODEL))

clean:
	rm -rf $(VENV) demo_out bench_out eval_out .pytest_cache
