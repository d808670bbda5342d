# `make demo` and `make test` create .venv and install gptjax into it when needed.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
BIN := $(VENV)/bin
# The demo uses one simulated host device per core with a data-parallel mesh (faster on CPU).
CPU_DEVICES ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: demo test test-fast lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# -qq: errors only. The editable build's informational banner ("be careful with folders
	@# ... the same name as your package") would otherwise open every fresh demo log.
	$(BIN)/python -m pip install -qq -e '.[test]'
	touch $(STAMP)

# The whole recipe: pretrain -> SFT -> DPO -> the three models evaluated side by side -> a
# scripted chat. Each step resumes or skips what a previous `make demo` already finished.
# The chat adds a repetition penalty of 1.2 to chat's default no-repeat 3-grams: on the demo
# models it keeps the answers short and on topic (README "Generation").
demo: $(STAMP)
	export XLA_FLAGS="--xla_force_host_platform_device_count=$(CPU_DEVICES)" && \
	$(BIN)/gptjax train --config configs/tiny.py --workdir runs/demo && \
	$(BIN)/gptjax train --config configs/tiny_sft.py --workdir runs/demo-sft \
		--config.init_from=runs/demo && \
	$(BIN)/gptjax train --config configs/tiny_dpo.py --workdir runs/demo-dpo \
		--config.init_from=runs/demo-sft && \
	$(BIN)/gptjax eval runs/demo runs/demo-sft runs/demo-dpo --max-batches 16 --max-generate 64 \
		--show 2 && \
	printf '%s\n' 'What does `json.dumps` do?' 'What does `os.path.join` do?' /quit | \
		$(BIN)/gptjax chat runs/demo-dpo --temperature 0 --repetition-penalty 1.2

# Everything, slow end-to-end runs included (what CI runs); lists the 20 slowest tests.
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=20

# Unit and small integration tests, under 5 minutes on 2 cores: a contributor's loop.

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check gptjax tests configs tools
	$(BIN)/ruff format --check gptjax tests configs tools

format: $(STAMP)
	$(BIN)/ruff format gptjax tests configs tools
	$(BIN)/ruff check --fix gptjax tests configs tools

clean:
	rm -rf $(VENV) runs .pytest_cache
