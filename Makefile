# The two commands of the README, plus what CI runs.
#   make demo   run a real sale on this machine (embedded, supervised redis-server)
#               and its shop page on a second origin (the URL is printed first)
#   make test   run every test against real redis-server processes

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test deps browser-deps lint loadtest-smoke

deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server is missing: installing it with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }

# The shop page's tests (tests/browser.rs) drive a headless Chromium.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "chromium is missing: installing it with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# Prints the shop page's URL first: open it in a browser.
demo: deps
	cargo run --release -- serve --demo

test: deps browser-deps
	cargo test --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
