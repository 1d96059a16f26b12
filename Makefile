# The two commands of the README, plus what CI runs.
#   make demo   run a real sale on this machine (embedded, supervised redis-server)
#   make test   run every test against real redis-server processes

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test deps lint loadtest-smoke

deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server is missing: installing it with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }

demo: deps
	cargo run --release -- serve --demo

test: deps
	cargo test --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
