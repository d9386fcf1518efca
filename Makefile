# Two commands for a fresh machine: `make demo` (install, demo data, prepare, pretrain, fine-tune, evaluate)
# and `make test`. Everything installs into .venv from requirements.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= demo_data
DEMO_RUNS ?= demo_runs
# benchmarks/demo_timings.sh sets STAGE_TIMER to time each stage; empty by default.
STAGE_TIMER ?=
# accelerate launch defaults to one CPU thread per process; a single process should use every core.
LAUNCH := $(STAGE_TIMER) $(BIN)/accelerate launch --num_processes 1 --num_machines 1 --num_cpu_threads_per_process $(shell nproc) --mixed_precision no --dynamo_backend no
# Step budgets that keep the whole demo under 20 minutes on 2 CPU cores (19 measured: docs/benchmarks.md). The tiny preset pretrains with 4 x 4 x 4
# tubelets (512 video tokens) and every stage fine-tuned from it inherits them, so its steps cost ~2-3x those of
# the 2 x 8 x 8 tubelets the demo had before: fewer steps than then.
PRETRAIN_STEPS ?= 120
RETRIEVAL_STEPS ?= 150
QA_MC_STEPS ?= 80
QA_OE_STEPS ?= 60

.PHONY: install demo test clean-demo

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

install: $(VENV)/.installed

demo: install
	rm -rf $(DEMO_DATA) $(DEMO_RUNS)  # a fresh store (extraction resumes by video id) and fresh runs (a run dir belongs to one run)
	$(STAGE_TIMER) $(BIN)/python -m prepare.demo $(DEMO_DATA)
	$(STAGE_TIMER) $(BIN)/python -m prepare $(DEMO_DATA)
	$(LAUNCH) train.py --task pretrain --data $(DEMO_DATA) --output-dir $(DEMO_RUNS)/pretrain --max-steps $(PRETRAIN_STEPS)
	$(STAGE_TIMER) $(BIN)/python evaluate.py --task retrieval --data $(DEMO_DATA) --checkpoint $(DEMO_RUNS)/pretrain --zero-shot \
		--output $(DEMO_RUNS)/zero_shot_retrieval.json
	$(STAGE_TIMER) $(BIN)/python evaluate.py --task qa-mc --data $(DEMO_DATA) --checkpoint $(DEMO_RUNS)/pretrain --zero-shot \
		--output $(DEMO_RUNS)/zero_shot_qa-mc.json
	$(LAUNCH) train.py --task retrieval --data $(DEMO_DATA) --output-dir $(DEMO_RUNS)/retrieval \
		--init $(DEMO_RUNS)/pretrain --max-steps $(RETRIEVAL_STEPS)
	$(STAGE_TIMER) $(BIN)/python evaluate.py --task retrieval --data $(DEMO_DATA) --checkpoint $(DEMO_RUNS)/retrieval \
		--output $(DEMO_RUNS)/finetuned_retrieval.json
	$(LAUNCH) train.py --task qa-mc --data $(DEMO_DATA) --output-dir $(DEMO_RUNS)/qa-mc \
		--init $(DEMO_RUNS)/pretrain --max-steps $(QA_MC_STEPS)
	$(STAGE_TIMER) $(BIN)/python evaluate.py --task qa-mc --data $(DEMO_DATA) --checkpoint $(DEMO_RUNS)/qa-mc \
		--output $(DEMO_RUNS)/finetuned_qa-mc.json
	$(LAUNCH) train.py --task qa-oe --data $(DEMO_DATA) --output-dir $(DEMO_RUNS)/qa-oe \
		--init $(DEMO_RUNS)/pretrain --max-steps $(QA_OE_STEPS)
	$(STAGE_TIMER) $(BIN)/python evaluate.py --task qa-oe --data $(DEMO_DATA) --checkpoint $(DEMO_RUNS)/qa-oe \
		--output $(DEMO_RUNS)/finetuned_qa-oe.json
	$(BIN)/python -m violet.report $(DEMO_RUNS) --data $(DEMO_DATA)
	@echo "TensorBoard: $(BIN)/tensorboard --logdir $(DEMO_RUNS)"

# The HTML report's browser test (tests/test_html_report.py) needs Chromium and chromedriver: as root, install
# them from the distribution when missing. A failure is tolerated (the leading -): the test then skips, saying why.
test: install
	-@if [ "$$(id -u)" = 0 ] && ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver for the browser test"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| echo "chromium could not be installed: the browser test will skip"; \
	fi
	$(BIN)/python -m pytest -q --durations=15 tests

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_RUNS)
