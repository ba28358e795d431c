# The two commands of the README. Both set up ./.venv first (scripts/setup.sh is idempotent).
.PHONY: setup demo test test-all test-opensearch lint clean

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/latentsearch demo

test: setup
	.venv/bin/pytest

test-all: setup
	.venv/bin/pytest -m "slow or not slow"

# a real OpenSearch 2.19.1 node (k-NN, neural-search, ML Commons) from Maven artifacts: needs Java 17+ and Maven
# (docker/opensearch-local/README.md); without them these tests skip
test-opensearch: setup
	.venv/bin/pytest -m opensearch_node

lint:
	.venv/bin/ruff check latentsearch ingest query models mappings onnx_export tests benchmarks

clean:
	rm -rf .venv build dist *.egg-info
