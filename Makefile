# make lab   -- set up the environment and open JupyterLab on the lessons
# make test  -- set up the environment (with test tools) and run the whole test suite
# make run   -- execute every lesson headless with papermill into runs/ (PROFILE=smoke|cpu|gpu)
# make html  -- execute the lessons (PROFILE=...) and export them to HTML pages in build/html/;
#               EXECUTED=runs exports the lessons `make run` executed instead of running them again

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
PROFILE ?= smoke
DATASET ?=
EXECUTED ?=
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))

.PHONY: lab test run html clean-env

$(PY):
	$(PYTHON) -m venv $(VENV)

# Stamps make a re-run skip what is already installed; they are redone when the
# dependencies change.
$(VENV)/.lab: $(PY) pyproject.toml constraints.txt
	$(PIP) -e ".[lab]"
	$(PY) -m ipykernel install --user --name dynat-lite --display-name "Python (dynat-lite)"
	touch $@

$(VENV)/.test: $(VENV)/.lab
	$(PIP) -e ".[lab,test]"
	touch $@

lab: $(VENV)/.lab
	$(VENV)/bin/jupyter lab notebooks/

test: $(VENV)/.test
	$(PY) -m pytest -q

run: $(VENV)/.lab
	mkdir -p runs
	for nb in $(NOTEBOOKS); do \
	  $(VENV)/bin/papermill --cwd notebooks "$$nb" "runs/$$(basename $$nb)" \
	    -p PROFILE $(PROFILE) $(if $(DATASET),-p DATASET $(DATASET)) || exit 1; \
	done

html: $(VENV)/.lab
	$(PY) tools/export_html.py --profile $(PROFILE) $(if $(DATASET),--dataset $(DATASET)) \
	  $(if $(EXECUTED),--executed $(EXECUTED))

clean-env:
	rm -rf $(VENV)
