# Sourced by scripts/test.sh and scripts/demo.sh: a project venv with the package (editable,
# which also builds the labextension with npm) and the test extras, plus everything the tests
# use from outside Python (they never install anything themselves).
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# the labextension's build and test deps (vitest): the editable install above builds the
# extension with npm only when its output is missing, so install them here too
if command -v npm >/dev/null && [ ! -f labextension/node_modules/vitest/package.json ]; then
  (cd labextension && npm install -q --no-audit --no-fund >/dev/null) \
    || echo "setup: labextension npm deps not installed; its unit tests will skip" >&2
fi
# rebuild the labextension when its sources changed since the last build (the editable install
# above skips the build while an old one exists)
built=jupyter_gpumarket/labextension/static/style.js
if command -v npm >/dev/null && [ -f labextension/node_modules/typescript/package.json ] && { [ ! -f "$built" ] \
    || [ -n "$(find labextension/src labextension/style labextension/schema labextension/package.json -newer "$built" 2>/dev/null | head -1)" ]; }; then
  (cd labextension && PATH="$PWD/../.venv/bin:$PATH" npm run -s build:prod >/dev/null 2>&1) \
    || echo "setup: labextension not rebuilt; its UI tests use the previous build" >&2
fi
# kernel sandbox: bubblewrap + nftables (root, Debian/Ubuntu), and as root the kernel slot users
{ command -v bwrap && command -v nft; } >/dev/null || (apt-get update -qq && apt-get install -y -qq bubblewrap nftables) >/dev/null 2>&1 || true
if [ "$(id -u)" = 0 ] && command -v bwrap >/dev/null; then
  .venv/bin/gpumarket provider setup --slots 2 >/dev/null || echo "setup: kernel slot users not created; sandbox tests will skip" >&2
fi
# anvil (npm @foundry-rs/anvil) into ~/.gpumarket/tools with the project's own installer;
# without npm the devnets use the embedded py-evm chain
.venv/bin/python -c "from jupyter_gpumarket.chain.anvil import find_anvil, install_anvil; find_anvil() or install_anvil()" \
  || echo "setup: anvil not installed; devnets use the embedded chain" >&2
# ethers.js for the EIP-712 cross-check (tests/chain/test_ethers_crosscheck.py)
if command -v npm >/dev/null && [ ! -f tests/chain/ethers/node_modules/ethers/package.json ]; then
  (cd tests/chain/ethers && npm install -q --no-audit --no-fund --no-package-lock >/dev/null) \
    || echo "setup: ethers not installed; its cross-check will skip" >&2
fi
# the UI end-to-end test (tests/e2e/test_ui_widgets.py): Debian's chromium driven by Playwright
# (pip, in the test extra); Playwright's own browser download is never used
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "setup: chromium not installed; the UI test will skip" >&2
  else
    echo "setup: /usr/bin/chromium missing and not root (apt-get install chromium); the UI test will skip" >&2
  fi
fi
