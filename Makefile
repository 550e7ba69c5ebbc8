# Two commands on a fresh machine:  make run   |   make test
# A GPU user who already has a CUDA torch in .venv keeps it: torch is installed only when missing.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
CORES  ?= all
BIN    := $(VENV)/bin

.PHONY: run report pull test venv lint docs clean-results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(BIN)/snakemake --cores $(CORES)
	@echo
	@echo "Results are under results/: data/ and runs/ and imp/ (Zarr), tables/ (Parquet), figures/, logs/."
	@echo "Try:  $(BIN)/sublevel query \"select experiment, split, round(avg(accuracy), 3) as accuracy from train where step = (select max(step) from train t where t.experiment = train.experiment) group by all order by all\""

report: venv
	$(BIN)/snakemake --report results/report.html
	@echo "Open results/report.html in a browser (one self-contained file)."

# Results from a DVC remote: dvc pull restores files without Snakemake's job records and in no particular
# order; --touch then gives them their times in job order, so snakemake reruns nothing that is finished.
pull: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc pull
	$(BIN)/snakemake --touch --cores 1 --quiet

test: venv
	$(BIN)/python -m pytest -q

# The benchmark tables from bench/results/*.json (docs/results.md comes from `sublevel reproduce --format markdown --out docs/results.md`)
docs: venv
	{ echo "# Benchmark tables"; echo; echo "Every \`bench/run.py run\` report under bench/results/, as \`make docs\` renders it (\`bench/run.py table\`)."; \
	  echo; $(BIN)/python bench/run.py table bench/results/*.json; } > docs/benchmark-tables.md.tmp
	mv docs/benchmark-tables.md.tmp docs/benchmark-tables.md

lint: venv
	$(BIN)/snakemake -n
	$(BIN)/snakemake --lint

# Every results root (results/ and the ones configs name under it) and Snakemake's records; results/README.md stays
clean-results:
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf .snakemake
