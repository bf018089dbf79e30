# make lab   -- set up the environment and open JupyterLab on the lessons; as root it adds
#               --allow-root; JUPYTER_ARGS passes flags (e.g. "--ip=0.0.0.0 --no-browser --port=8888")
# make test  -- set up the environment (with test tools) and run the whole test suite
# make run   -- execute every lesson headless with papermill into runs/ (PROFILE=smoke|cpu|gpu)
# make html  -- execute the lessons (PROFILE=...) and export them to HTML pages in build/html/,
#               plotly.js and MathJax beside them (figures and formulas need no network);
#               EXECUTED=runs exports the lessons `make run` executed instead of running them again
# make clean -- strip outputs from the lessons in notebooks/ and remove build/
# make student -- write the student versions of the lessons (exercises without their solutions,
#               by nbgrader's preprocessors) to notebooks/student/
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu  -- take PyTorch from that index (CPU-only
#               machines); it applies when the environment is installed (after make clean-env)

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
TORCH_INDEX_URL ?=
PIP     := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt \
           $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))
JUPYTER_ARGS ?=
# Jupyter refuses to start as root without --allow-root (containers, Colab-like VMs, CI).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)
PROFILE ?= smoke
DATASET ?=
EXECUTED ?=
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))

.PHONY: lab test run html clean clean-env git-filter student

$(PY):
	$(PYTHON) -m venv $(VENV)

# Stamps make a re-run skip what is already installed; they are redone when the
# dependencies change. No kernel is registered: JupyterLab and papermill run from the venv, and
# their "python3" kernel (the one every lesson asks for) is the venv's own Python.
$(VENV)/.lab: $(PY) pyproject.toml constraints.txt
	$(PIP) -e ".[lab]"
	touch $@

$(VENV)/.test: $(VENV)/.lab
	$(PIP) -e ".[lab,test]"
	touch $@

# Outputs never reach git: git runs every *.ipynb through tools/strip_outputs.py before storing
# it (.gitattributes names the filter; this registers it for this clone).
git-filter:
	@if [ "$$(git rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)" ]; then \
	  git config filter.strip-notebook-outputs.clean "$(PYTHON) tools/strip_outputs.py" && \
	  git config filter.strip-notebook-outputs.required true && \
	  echo "git: notebooks are stored without outputs (filter strip-notebook-outputs)"; \
	else echo "not a git clone: no output filter to register"; fi

# JupyterLab prints the address to open, with its token, as the last lines of its start-up.
lab: $(VENV)/.lab git-filter
	@echo "Starting JupyterLab; open the http://...?token=... address it prints below."
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks $(ALLOW_ROOT) $(JUPYTER_ARGS)

test: $(VENV)/.test
	$(PY) -m pytest -q

student: $(VENV)/.lab
	$(PY) tools/make_student.py

run: $(VENV)/.lab
	mkdir -p runs
	for nb in $(NOTEBOOKS); do \
	  $(VENV)/bin/papermill --engine dynat --cwd notebooks -k python3 "$$nb" "runs/$$(basename $$nb)" \
	    -p PROFILE $(PROFILE) $(if $(DATASET),-p DATASET $(DATASET)) || exit 1; \
	done

html: $(VENV)/.lab
	$(PY) tools/export_html.py --profile $(PROFILE) $(if $(DATASET),--dataset $(DATASET)) \
	  $(if $(EXECUTED),--executed $(EXECUTED))

clean:
	$(PYTHON) tools/strip_outputs.py $(wildcard notebooks/*.ipynb notebooks/*/*.ipynb)
	rm -rf build

clean-env:
	rm -rf $(VENV)
