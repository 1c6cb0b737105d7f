# Two jobs, each installs what is missing first (a virtual environment in .venv):
#   make train [ARGS="train.relational_epochs=40 model.z_dim=8"] [DATASET=dsprites]
#   make test
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
DATASET ?= dsprites
ARGS ?=

.PHONY: train test install

install: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/python $(DATASET)/train.py $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n auto
