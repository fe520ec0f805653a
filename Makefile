# MeWM Workbench: two commands do everything on a fresh clone.
#   make app    set up (venv + install) and serve the app on http://127.0.0.1:8501 with the embedded defaults
#   make test   set up (venv + install + Debian chromium) and run the whole test suite
PORT ?= 8501
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1

.PHONY: app test setup

setup:
	@scripts/setup.sh

app: setup
	.venv/bin/streamlit run app/streamlit_app.py --server.headless true --server.address 127.0.0.1 \
		--server.port $(PORT) --browser.gatherUsageStats false

test:
	@scripts/setup.sh --test
	.venv/bin/python -m pytest $(PYTEST_ARGS)
