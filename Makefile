# Every target installs what it needs into .venv on first use.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
STAMP := $(VENV)/.installed
MODEL ?= facebook/encodec_24khz

.PHONY: install test lint demo bench eval clean

$(STAMP): setup.py
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulled in by a dependency would fetch a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	# Meta's reference (test-time only, CC-BY-NC 0.1.1 release, never shipped): no deps, it would pull torchaudio.
	$(PIP) install -q --no-deps encodec==0.1.1
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

lint: $(STAMP)
	$(PYTHON) -m ruff check src tests conversion benchmarks
	$(PYTHON) -m ruff format --check src tests conversion benchmarks

demo: $(STAMP)
	$(PYTHON) -m encodec_hf.demo --model $(MODEL) --output demo_out/decoded.wav

bench: $(STAMP)
	$(PYTHON) benchmarks/bench_codec.py

# Quality per bitrate against Opus on ../shared/audio's clips (skipped when absent). MODEL= a folder or Hub id;
# without one, a random-weight 24 kHz model is saved to eval_out/random_24khz (meaningless quality, a dry run).
EVAL_AUDIO ?= ../shared/audio
CONTENT ?= music
eval: $(STAMP)
	$(PYTHON) benchmarks/run_eval.py --audio $(EVAL_AUDIO) --content $(CONTENT) --report eval_out $(if $(filter file,$(origin MODEL)),,--model $(MODEL))

clean:
	rm -rf $(VENV) demo_out bench_out eval_out .pytest_cache
